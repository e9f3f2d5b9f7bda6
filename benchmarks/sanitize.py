"""Every kernel at small, odd shapes, for compute-sanitizer (out-of-bounds accesses, races):

    PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck python benchmarks/sanitize.py
    compute-sanitizer --tool racecheck python benchmarks/sanitize.py

Run it once without the sanitizer first so that Triton's compiled kernels come from its cache.
Covers: dense causal / non-causal with Nq != Nk, GQA, key padding mask, per-head α with dα, α = 1 / 1.25 / 2,
return_stats, varlen with an empty and a one-token sequence, fp16 / bf16 / fp32, D = 80 (masked head dim).
"""
import torch

import entflash


def main():
    dev = "cuda"
    torch.manual_seed(0)
    cases = [
        dict(B=2, H=4, Hkv=2, Nq=77, Nk=200, D=64, dt=torch.bfloat16, alpha=1.5, causal=True, kpm=False),
        dict(B=1, H=2, Hkv=1, Nq=130, Nk=65, D=80, dt=torch.float16, alpha=2.0, causal=True, kpm=True),
        dict(B=2, H=2, Hkv=2, Nq=65, Nk=129, D=128, dt=torch.float32, alpha=1.25, causal=False, kpm=True),
        dict(B=1, H=3, Hkv=3, Nq=100, Nk=100, D=64, dt=torch.bfloat16, alpha="per-head", causal=True, kpm=False),
        dict(B=1, H=2, Hkv=1, Nq=70, Nk=70, D=64, dt=torch.bfloat16, alpha=1.0, causal=True, kpm=True),
    ]
    for c in cases:
        q = torch.randn(c["B"], c["H"], c["Nq"], c["D"], device=dev, dtype=c["dt"], requires_grad=True)
        k, v = (torch.randn(c["B"], c["Hkv"], c["Nk"], c["D"], device=dev, dtype=c["dt"], requires_grad=True)
                for _ in range(2))
        alpha = c["alpha"]
        if alpha == "per-head":
            alpha = torch.tensor([1.0, 1.5, 1.8], device=dev, requires_grad=True)
        kpm = (torch.rand(c["B"], c["Nk"], device=dev) > 0.3) if c["kpm"] else None
        res = entflash.entmax_attention(q, k, v, alpha=alpha, causal=c["causal"], key_padding_mask=kpm,
                                        return_stats=True, backend="triton")
        res.out.float().square().sum().backward()
        torch.cuda.synchronize()
        print("ok", {kk: str(vv) for kk, vv in c.items()}, flush=True)
    lens = [0, 1, 150, 67]
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32, device=dev)
    T = sum(lens)
    q, k, v = (torch.randn(T, h, 64, device=dev, dtype=torch.float16, requires_grad=True) for h in (4, 2, 2))
    out = entflash.entmax_attention_varlen(q, k, v, cu, cu, max(lens), max(lens), causal=True)
    out.float().sum().backward()
    torch.cuda.synchronize()
    print("ok varlen", lens, flush=True)


if __name__ == "__main__":
    import argparse

    argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    main()

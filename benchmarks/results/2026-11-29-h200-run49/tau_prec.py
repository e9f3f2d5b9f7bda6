"""τ, output and Σp of the general-α kernels against float64 at α near 1 (dense random rows, fp32 inputs).

For the lg2.approx branch: the sweeps' log2 precision matters most where 1/(α-1) is large. Prints, per α:
max |τ - τ64| (in (α-1)·score units), the output's max abs error for entflash (fp32) and for the torch
reference run in fp32, and max |Σp - 1| (from v = ones)."""
import torch
import entflash
from entflash.reference import naive_entmax_attention

torch.manual_seed(0)
dev = "cuda" if torch.cuda.is_available() else "cpu"
B, H, N, D = (1, 4, 2048, 64) if dev == "cuda" else (1, 1, 40, 16)
for inputs in ("random", "peaked"):
    for alpha in (1.1, 1.12, 1.15, 1.2, 1.3):
        q = torch.randn(B, H, N, D, device=dev)
        k = torch.randn(B, H, N, D, device=dev)
        if inputs == "peaked":
            q, k = q * 3.0, k * 3.0   # scores ~9x larger: fewer keys per row
        v = torch.randn(B, H, N, D, device=dev)
        ones = torch.ones(B, H, N, D, device=dev)
        st = entflash.entmax_attention(q, k, v, alpha=alpha, causal=True, return_stats=True)
        ref64 = naive_entmax_attention(q.double(), k.double(), v.double(), alpha=alpha, causal=True, return_stats=True)
        ref32 = naive_entmax_attention(q, k, v, alpha=alpha, causal=True)
        s1 = entflash.entmax_attention(q, k, ones, alpha=alpha, causal=True)
        dt = (st.tau.double() - ref64.tau.double()).abs().max().item()
        eo = (st.out.double() - ref64.out).abs().max().item()
        er = (ref32.double() - ref64.out).abs().max().item()
        es = (s1.double() - 1).abs().max().item()
        ps = (st.support.float().mean().item())
        print(f"{inputs:7s} alpha {alpha:5.2f}  max|dtau| {dt:.2e}  out err {eo:.2e} (fp32 ref {er:.2e}, ratio {eo/er:5.2f})"
              f"  max|sum p - 1| {es:.2e}  mean support {ps:.1f}", flush=True)
        del ref64
        torch.cuda.empty_cache()

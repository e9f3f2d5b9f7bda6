"""Price of a learnable per-head α: forward+backward with α a (H,) tensor that needs its gradient, next to the
same call with α = 1.5 as a float (D64, N = 16384, B = 2, H = 16, causal, bf16, the bench's inputs).

    PYTHONPATH=src python benchmarks/dalpha_cost.py [--split]  # one line per input kind (--split: and
                                                                # the forward / no-dα parts)
Run it with another tree's src first on PYTHONPATH to compare two versions in one device call.
"""
import sys

import torch
from triton.testing import do_bench

import entflash
from entflash.bench.inputs import make_inputs


def fwdbwd_ms(q, k, v, alpha, causal=True, alpha_grad=True):
    """Forward+backward time; a tensor α needs its gradient unless alpha_grad is False."""
    ins = [t.clone().requires_grad_() for t in (q, k, v)]
    a = alpha.clone().requires_grad_(alpha_grad) if isinstance(alpha, torch.Tensor) else alpha
    dout = torch.randn_like(q)
    grads = ins + ([a] if isinstance(a, torch.Tensor) and alpha_grad else [])

    def step():
        entflash.entmax_attention(*ins, alpha=a, causal=causal).backward(dout)

    return do_bench(step, grad_to_none=grads, rep=100)


def fwd_ms(q, k, v, alpha, causal=True):
    def step():
        with torch.no_grad():
            entflash.entmax_attention(q, k, v, alpha=alpha, causal=causal)

    return do_bench(step, rep=100)


if __name__ == "__main__":
    H = 16
    for inputs in ("clustered", "random"):
        q, k, v = make_inputs(inputs, 2, H, 16384, 64, True)
        t_float = fwdbwd_ms(q, k, v, 1.5)
        head = torch.full((H,), 1.5, device=q.device)
        t_head = fwdbwd_ms(q, k, v, head)
        print(f"{entflash.__file__} {inputs}: f+b alpha=1.5 float {t_float:.3f} ms, per-head tensor with dalpha "
              f"{t_head:.3f} ms ({t_head / t_float:.2f}x)", flush=True)
        if "--split" in sys.argv:
            # where a per-head α's price goes: the general kind's forward (pow through exp2/log2), the backward
            # without dα (the general kind's p and u), and dα's own sums (the rest)
            f_float, f_head = fwd_ms(q, k, v, 1.5), fwd_ms(q, k, v, head)
            t_nograd = fwdbwd_ms(q, k, v, head, alpha_grad=False)
            print(f"  {inputs}: forward float {f_float:.3f} ms, per-head {f_head:.3f}; f+b per-head without dalpha "
                  f"{t_nograd:.3f} ms", flush=True)

"""Backward time under per-kernel register caps (config.MAXNREG) on the GPU: whether two 8-warp programs per
SM help the dq kernel as they help the τ sweeps (NOTES run 14). D64 N16k B2 H16 bf16 causal.

    PYTHONPATH=src python benchmarks/regcap_probe.py
"""
import torch
from triton.testing import do_bench

import entflash
from entflash.bench.inputs import make_inputs
from entflash.kernels import config


def main():
    for inputs in ("clustered", "random"):
        q, k, v = make_inputs(inputs, 2, 16, 16384, 64, True)
        q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
        do = torch.randn_like(q)
        # {"dq": None}: no cap (the launch default is 128 at D <= 64 since run 16)
        for caps in ({"dq": None}, {"dq": 168}, {"dq": 128}):
            config.MAXNREG = caps

            def fwd():
                return entflash.entmax_attention(q, k, v, alpha=1.5, causal=True)

            def fb():
                fwd().backward(do)
            fb()
            t_f = do_bench(fwd, warmup=5, rep=60, return_mode="median")
            t_fb = do_bench(fb, warmup=5, rep=60, grad_to_none=[q, k, v], return_mode="median")
            print(f"{inputs} caps={caps}: fwd {t_f:.3f} ms, fwd+bwd {t_fb:.3f} ms, bwd {t_fb - t_f:.3f} ms", flush=True)
    config.MAXNREG = {}


if __name__ == "__main__":
    main()

"""dα near α = 1 with few keys on the GPU: kernel vs float64 vs float32 reference, 8 draws per case."""
import sys
import torch
import entflash
from entflash.reference import naive_entmax_attention
sys.path.insert(0, "tests")
from helpers import rand_qkv

DEV = "cuda" if torch.cuda.is_available() else "cpu"
torch.manual_seed(0)
for Nk in (1, 2, 3, 5):
    for draw in range(int(sys.argv[1]) if len(sys.argv) > 1 else 8):
        q, k, v = rand_qkv(1, 3, 1, 23, Nk, 16, device=DEV, requires_grad=True)
        alpha = torch.tensor([1.02, 1.05, 1.5], device=DEV, requires_grad=True)
        out = entflash.entmax_attention(q, k, v, alpha=alpha, backend="triton")
        dout = torch.randn_like(out)
        g = torch.autograd.grad(out, [q, k, v, alpha], dout)
        ins64 = [t.detach().double().cpu().requires_grad_() for t in (q, k, v, alpha)]
        r64 = naive_entmax_attention(*ins64[:3], alpha=ins64[3])
        g64 = torch.autograd.grad(r64, ins64, dout.double().cpu())
        ins32 = [t.detach().cpu().requires_grad_() for t in (q, k, v, alpha)]
        r32 = naive_entmax_attention(*ins32[:3], alpha=ins32[3])
        g32 = torch.autograd.grad(r32, ins32, dout.cpu())
        names = "dq dk dv dalpha".split()
        errs = []
        for n, a, b, c in zip(names, g, g64, g32):
            e = (a.cpu().double() - b).abs().max().item()
            base = (c.double() - b).abs().max().item()
            errs.append(f"{n} {e:.2e}/{3*base+2e-5:.2e}{' FAIL' if e > 3*base+2e-5 else ''}")
        print(f"Nk={Nk} draw={draw} dalpha={g[3].tolist()} ref={g64[3].tolist()} | " + " ; ".join(errs))

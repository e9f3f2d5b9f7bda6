"""Compile every production kernel variant for a GPU architecture without a GPU, and report what it costs.

    PYTHONPATH=src python benchmarks/kernel_check.py                    # sm_80, sm_89, sm_90, sm_100
    PYTHONPATH=src python benchmarks/kernel_check.py --arch 90 --resources
    PYTHONPATH=src python benchmarks/kernel_check.py --arch 90 --fingerprint > after.txt   # diff with a before.txt

It makes a set of representative calls (dtypes, head dims 64/80/128, every α kind, causal or not, padding,
GQA, varlen, per-head α with its gradient, the split τ pass of long inputs) on CPU tensors, with the options
configs.select() picks for the architecture; every kernel launch those calls make is recorded instead of run
(nothing executes) and compiled with Triton's bundled toolchain for that architecture. A launch that fails
to compile, or needs more shared memory than the architecture gives one program, is an error (exit status 1).

--resources: registers and spill bytes per launch (cuobjdump). --fingerprint: per launch, a hash of its PTX
instruction multiset (registers, labels and the kernel's name normalized, order ignored): equal hashes before
and after a change mean the same instructions, so GPU measurements of the old code still describe the new.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import re
import subprocess
import sys
import tempfile

os.environ.pop("TRITON_INTERPRET", None)  # the GPU records and compiled kernels, not the interpreter
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402
from triton.compiler.compiler import make_backend  # noqa: E402
from triton.runtime.jit import JITFunction, create_function_from_signature  # noqa: E402

from entflash.kernels import configs, ops  # noqa: E402

_recorded = []


def _record(self, *args, grid, warmup, **kwargs):
    """Stands in for JITFunction.run: keeps the launch instead of compiling and running it."""
    _recorded.append((self, args, kwargs))


def record_launches(fn):
    """The kernel launches fn() makes, as (JITFunction, args, kwargs), none of them run."""
    saved = JITFunction.run
    JITFunction.run = _record
    _recorded.clear()
    try:
        fn()
    finally:
        JITFunction.run = saved
    return list(_recorded)


def compile_launch(fn, args, kwargs, arch: int):
    """A recorded launch compiled for sm_<arch>, specialized as Triton's launcher would specialize it."""
    target = GPUTarget("cuda", arch, 32)
    backend = make_backend(target)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    kw = dict(kwargs, debug=False)
    bound, specialization, options = binder(*args, **kw)
    options, signature, constexprs, attrs = fn._pack_args(backend, kw, bound, specialization, options)
    return triton.compile(ASTSource(fn, signature, constexprs, attrs), target=target, options=options.__dict__)


def calls(arch):
    """(name, fn) of the representative calls, each running forward and backward with this arch's options."""
    A = (arch // 10, arch % 10)
    bf, f16, f32 = torch.bfloat16, torch.float16, torch.float32

    def t(*shape, dt):
        return torch.randn(*shape).to(dt).requires_grad_()

    def dense(name, B, H, Hkv, Nq, Nk, D, dt, **kw):
        def run():
            q, k, v = t(B, H, Nq, D, dt=dt), t(B, Hkv, Nk, D, dt=dt), t(B, Hkv, Nk, D, dt=dt)
            out = ops.attention(q, k, v, scale=1 / math.sqrt(D), options=configs.select(A, dt, D),
                                **{"causal": False, "key_padding_mask": None, "return_stats": False, **kw})
            (out[0] if isinstance(out, tuple) else out).sum().backward()
        return name, run

    def varlen(name, D, dt):
        def run():
            cu = torch.tensor([0, 300, 1024], dtype=torch.int32)
            q, k, v = (t(1024, 4, D, dt=dt) for _ in range(3))
            ops.attention_varlen(q, k, v, cu, cu, 724, 724, alpha=1.5, causal=True, scale=1 / math.sqrt(D),
                                 options=configs.select(A, dt, D)).sum().backward()
        return name, run

    def decode(name, B, H, Hkv, Nq, Nk, D, dt, **kw):
        def run():  # forward only, no gradient: the decode path (kernels/decode.py)
            q, k, v = (torch.randn(*s).to(dt) for s in ((B, H, Nq, D), (B, Hkv, Nk, D), (B, Hkv, Nk, D)))
            with torch.no_grad():
                ops.attention(q, k, v, scale=1 / math.sqrt(D), options=configs.select(A, dt, D),
                              **{"causal": True, "key_padding_mask": None, "return_stats": False, **kw})
        return name, run

    def decode_varlen(name, D, dt):
        def run():
            cu_q, cu_k = torch.tensor([0, 1, 3], dtype=torch.int32), torch.tensor([0, 300, 1024], dtype=torch.int32)
            q, k, v = torch.randn(3, 8, D).to(dt), torch.randn(1024, 2, D).to(dt), torch.randn(1024, 2, D).to(dt)
            with torch.no_grad():
                ops.attention_varlen(q, k, v, cu_q, cu_k, 2, 724, alpha=2.0, causal=True, scale=1 / math.sqrt(D),
                                     options=configs.select(A, dt, D), return_stats=True)
        return name, run

    kpm = torch.ones(2, 2048, dtype=torch.bool)
    kpm[1, 1000:] = False
    return [
        dense("bf16 D64 causal α1.5 N16k (split τ)", 1, 16, 16, 16384, 16384, 64, bf, alpha=1.5, causal=True),
        dense("bf16 D64 causal α1.5 N1k stats", 2, 4, 4, 1024, 1024, 64, bf, alpha=1.5, causal=True,
              return_stats=True),
        dense("bf16 D128 causal α2 N16k", 1, 16, 16, 16384, 16384, 128, bf, alpha=2.0, causal=True),
        dense("bf16 D128 non-causal α1.5 N16k", 1, 16, 16, 16384, 16384, 128, bf, alpha=1.5),
        dense("fp16 D64 non-causal α1.25 padding", 2, 4, 4, 2048, 2048, 64, f16, alpha=1.25, key_padding_mask=kpm),
        dense("bf16 D64 causal per-head α (dα)", 1, 8, 8, 4096, 4096, 64, bf, causal=True,
              alpha=torch.full((8,), 1.5, requires_grad=True)),
        dense("bf16 D64 causal softmax stats", 1, 8, 8, 2048, 2048, 64, bf, alpha=1.0, causal=True, return_stats=True),
        dense("bf16 D64 GQA causal Nq<Nk", 1, 8, 2, 256, 1024, 64, bf, alpha=1.5, causal=True),
        dense("fp32 D64 causal α1.5 N16k", 1, 16, 16, 16384, 16384, 64, f32, alpha=1.5, causal=True),
        dense("fp32 D128 non-causal α1.5", 1, 4, 4, 2048, 2048, 128, f32, alpha=1.5),
        varlen("fp32 D80 varlen causal α1.5", 80, f32),
        dense("bf16 D256 causal α1.5", 1, 4, 4, 1024, 1024, 256, bf, alpha=1.5, causal=True),
        dense("bf16 D64 causal α1.5 window, attn_mask, dropout", 2, 8, 2, 2048, 2048, 64, bf, alpha=1.5, causal=True,
              window=(256, 0), attn_mask=torch.ones(2, 1, 2048, 2048, dtype=torch.bool), dropout_p=0.1,
              seed=torch.tensor([1])),
        dense("bf16 D128 α1.5 window N16k (split τ)", 1, 16, 16, 16384, 16384, 128, bf, alpha=1.5,
              window=(1024, 1024)),
        decode("bf16 D128 decode GQA 4:1 α1.5 cache 32k", 2, 32, 8, 1, 32768, 128, bf, alpha=1.5),
        decode("fp16 D64 decode 3 tokens α1.25 window padding stats", 2, 4, 2, 3, 2048, 64, f16, alpha=1.25,
               window=(512, 0), key_padding_mask=kpm, return_stats=True),
        decode("bf16 D80 decode per-head α", 1, 8, 8, 1, 4096, 80, bf, alpha=torch.linspace(1.0, 2.0, 8)),
        decode_varlen("fp32 D128 decode varlen α2 stats", 128, f32),
    ]


_DEBUG = re.compile(r"^\s*\.b(8|16|32|64)\s|DW_|^\s*\.section|^\s*//|^\s*\.loc|^\s*\.file")


def fingerprint(ptx: str, name: str) -> str:
    code = [line.replace(name, "KERNEL") for line in ptx.splitlines() if not _DEBUG.search(line)]
    norm = [re.sub(r"\$L__\w+", "L", re.sub(r"%([a-z]+)\d+", r"%\1", line)) for line in code]
    return hashlib.sha1("\n".join(sorted(n for n in norm if n.strip() != "L:")).encode()).hexdigest()[:12]


def resources(kernel) -> str:
    """'REG <n> STACK <bytes>' from Triton's bundled cuobjdump."""
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(kernel.asm["cubin"])
    try:
        usage = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
    finally:
        os.unlink(f.name)
    res = next((line.split("REG:")[1].split() for line in usage.splitlines() if "REG:" in line), ["?", "?"])
    return f"registers {res[0]:>4} {res[1]}"


def check(arch: int, show_resources: bool, show_fingerprint: bool) -> int:
    limit = configs.SHARED_LIMIT.get((arch // 10, arch % 10))
    errors = 0
    torch.manual_seed(0)
    print(f"# sm_{arch}: shared memory limit {limit} B per program")
    for name, fn in calls(arch):
        print(f"## {name}")
        for i, (kern, args, kw) in enumerate(record_launches(fn)):
            kname = kern.fn.__name__
            try:
                k = compile_launch(kern, args, kw, arch)
            except Exception as e:  # report every failure, then fail the whole check
                print(f"  {i:2d} {kname:20s} COMPILE ERROR {type(e).__name__}: {str(e)[:200]}")
                errors += 1
                continue
            o = k.metadata
            line = f"  {i:2d} {kname:20s} warps {o.num_warps} stages {o.num_stages} maxnreg {o.maxnreg}"
            if show_fingerprint:
                line += f"  ptx {fingerprint(k.asm['ptx'], kname)}"
            line += f"  shared {o.shared:>6} B"
            if show_resources:
                line += "  " + resources(k)
            if limit is not None and o.shared > limit:
                line += f"  OVER THE LIMIT ({limit} B)"
                errors += 1
            print(line, flush=True)
    return errors


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", type=int, nargs="+", default=[80, 89, 90, 100],
                    help="compute capabilities as two digits (80 = A100, 89 = L40S/RTX 4090, 90 = H100/H200, "
                         "100 = B200)")
    ap.add_argument("--resources", action="store_true", help="registers and spills per launch")
    ap.add_argument("--fingerprint", action="store_true", help="PTX instruction-multiset hash per launch")
    args = ap.parse_args(argv)
    errors = sum(check(a, args.resources, args.fingerprint) for a in args.arch)
    print(f"{errors} launch(es) failed" if errors else "every launch compiled within its shared memory")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())

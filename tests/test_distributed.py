"""entflash under torch.distributed, on CPU process groups (gloo): 2 and 4 ranks.

Every rank builds the same inputs from one seed, runs the distributed call on its shard and the single-process
call on the whole, and compares: sequence parallelism (head sharding, dense and packed) and context parallelism
(keys sharded, distributed τ; contiguous and zig-zag layouts), forward and backward; a tiny Llama trained under
DDP and FSDP2 (fully_shard), with and without activation checkpointing, against the same training in one
process. The torch path in float64, so "equal" means to ~1e-10.
"""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import entflash
from entflash import distributed as ed

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")


def _port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(fn, world, *args):
    mp.spawn(_entry, args=(world, _port(), fn, args), nprocs=world, join=True)


def _entry(rank, world, port, fn, args):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        fn(rank, world, *args)
    finally:
        dist.destroy_process_group()


def _close(a, b, what, tol=1e-9):
    err = (a - b).abs().max().item() if a.numel() else 0.0
    assert err <= tol, f"{what}: max difference {err:.3e}"


def _summed(t):
    """The sum over ranks (a replicated parameter's gradient: each rank holds its part)."""
    t = t.clone()
    dist.all_reduce(t)
    return t


def _attention_cases(rank, world):
    """Sequence and context parallel attention against the single-process call, forward and backward."""
    torch.manual_seed(0)
    B, H, Hkv, N, D = 2, 4, 4 if world == 4 else 2, 8 * world, 8
    full = [torch.randn(B, h, N, D, dtype=torch.float64) for h in (H, Hkv, Hkv)]
    dout = torch.randn(B, H, N, D, dtype=torch.float64)
    kpm = torch.rand(B, N) > 0.2
    cases = [dict(alpha=1.5, causal=True), dict(alpha=2.0), dict(alpha=1.3, causal=True, key_padding_mask=kpm),
             dict(alpha="per-head", causal=True), dict(alpha=1.5, window=(5, 0), causal=True)]
    for kw in cases:
        alpha = torch.linspace(1.2, 1.9, H, dtype=torch.float64) if kw["alpha"] == "per-head" else kw["alpha"]
        kw = dict(kw, alpha=alpha)

        def inputs():
            leaves = [t.clone().requires_grad_() for t in full]
            a = alpha.clone().requires_grad_() if isinstance(alpha, torch.Tensor) else alpha
            return leaves, a

        (q, k, v), a = inputs()
        ref = entflash.entmax_attention(q, k, v, backend="torch", return_stats=True, **dict(kw, alpha=a))
        ref.out.backward(dout)
        ref_grads = [q.grad, k.grad, v.grad] + ([a.grad] if isinstance(a, torch.Tensor) else [])
        methods = [("sequence", None)]
        if "window" not in kw:
            methods += [("context", "contiguous"), ("context", "zigzag")]
        for method, layout in methods:
            (q, k, v), a = inputs()
            if method == "sequence":
                shard = lambda t: ed.shard_sequence(t)  # noqa: E731
                res = ed.sequence_parallel_attention(*(shard(t) for t in (q, k, v)), return_stats=True,
                                                     backend="torch", **dict(kw, alpha=a))
            else:
                shard = lambda t: ed.shard_sequence(t, layout=layout)  # noqa: E731
                # rows broadcast in chunks of 3: several chunks per rank, the last one short
                res = ed.context_parallel_attention(*(shard(t) for t in (q, k, v)), layout=layout, chunk=3,
                                                    return_stats=True, **dict(kw, alpha=a))
            res.out.backward(shard(dout))
            what = f"{method} {layout or ''} {kw}"
            _close(res.out, shard(ref.out), what + " out")
            _close(res.tau, shard(ref.tau[..., None])[..., 0], what + " tau", 1e-5)
            assert torch.equal(res.support, shard(ref.support[..., None])[..., 0]), what + " support"
            for name, got, want in zip("qkv", (q.grad, k.grad, v.grad), ref_grads):
                # each rank's gradient covers its own shard of the whole-sequence leaf
                _close(shard(got), shard(want), f"{what} d{name}")
            if isinstance(a, torch.Tensor):
                _close(_summed(a.grad), ref_grads[3], what + " dalpha")


def _varlen_case(rank, world):
    torch.manual_seed(1)
    H, Hkv, D = 4, 2 if world == 2 else 4, 8
    lens = [5, 11, 3 * world + 1]
    T = sum(lens)
    T += (-T) % world
    lens[-1] += T - sum(lens)
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32)
    q, k, v = (torch.randn(T, h, D, dtype=torch.float64, requires_grad=True) for h in (H, Hkv, Hkv))
    ref = entflash.entmax_attention_varlen(q, k, v, cu, cu, max(lens), max(lens), alpha=1.5, causal=True,
                                           backend="torch")
    n = T // world
    sl = slice(rank * n, (rank + 1) * n)
    qs, ks, vs = (t.detach()[sl].clone().requires_grad_() for t in (q, k, v))
    out = ed.sequence_parallel_attention_varlen(qs, ks, vs, cu, cu, max(lens), max(lens), alpha=1.5, causal=True,
                                                backend="torch")
    _close(out, ref[sl], "varlen out")
    g = torch.randn(T, H, D, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    ref.backward(g)
    out.backward(g[sl])
    for name, got, want in zip("qkv", (qs.grad, ks.grad, vs.grad), (q.grad, k.grad, v.grad)):
        _close(got, want[sl], f"varlen d{name}")


def _mesh_case(rank, world):
    """A DeviceMesh dimension instead of a process group gives the same result; both at once is an error."""
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh("cpu", (world,), mesh_dim_names=("sp",))
    torch.manual_seed(4)
    q, k, v = (ed.shard_sequence(torch.randn(1, 2 * world, 4 * world, 8, dtype=torch.float64)) for _ in range(3))
    a = ed.sequence_parallel_attention(q, k, v, mesh=mesh, mesh_dim="sp", causal=True, backend="torch")
    b = ed.sequence_parallel_attention(q, k, v, causal=True, backend="torch")
    c = ed.context_parallel_attention(q, k, v, mesh=mesh, mesh_dim="sp", causal=True)
    _close(a, b, "mesh")
    _close(a, c, "mesh, context parallel")
    with pytest.raises(ValueError, match="either group or mesh"):
        ed.sequence_parallel_attention(q, k, v, group=dist.group.WORLD, mesh=mesh, mesh_dim="sp", backend="torch")


def _errors_case(rank, world):
    q = torch.randn(1, 3, 4 // world * world, 8)
    with pytest.raises(ValueError, match="world size"):
        ed.sequence_parallel_attention(q, q, q, backend="torch")
    q = torch.randn(1, 2 * world, 4, 8)
    with pytest.raises(NotImplementedError, match="dropout"):
        ed.sequence_parallel_attention(q, q, q, dropout_p=0.1, backend="torch")
    with pytest.raises(ValueError, match="layout"):
        ed.shard_sequence(q, layout="ring")
    with pytest.raises(ValueError, match="multiple"):
        ed.shard_sequence(torch.randn(1, 1, 2 * world + 1, 4), layout="zigzag")


@pytest.mark.parametrize("world", [2, 4])
def test_attention_parallel_exact(world):
    _spawn(_attention_cases, world)


def test_varlen_sequence_parallel():
    _spawn(_varlen_case, 2)


def test_parallel_errors():
    _spawn(_errors_case, 2)


def test_device_mesh():
    _spawn(_mesh_case, 2)


# ----------------------------------------------------------------------------
# training engines
# ----------------------------------------------------------------------------


def _tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    import entflash.integrations.transformers  # noqa: F401

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, entmax_alpha=1.5)
    return LlamaForCausalLM._from_config(cfg, attn_implementation="entmax").to(torch.float64)


def _batches(steps=3, batch=4, length=24):
    g = torch.Generator().manual_seed(3)
    return [torch.randint(0, 64, (batch, length), generator=g) for _ in range(steps)]


def _train(model, batches, checkpointing=False):
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    losses = []
    for x in batches:
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def _engine_case(rank, world, engine, checkpointing):
    batches = _batches()
    ref = _train(_tiny_llama(), batches)
    model = _tiny_llama()
    if engine == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        wrapped = DistributedDataParallel(model)
    else:
        from torch.distributed.fsdp import fully_shard

        for layer in model.model.layers:
            fully_shard(layer)
        wrapped = fully_shard(model)
    n = batches[0].shape[0] // world
    local = [x[rank * n:(rank + 1) * n] for x in batches]
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    wrapped.train()
    opt = torch.optim.SGD(wrapped.parameters(), lr=0.5)
    for step, x in enumerate(local):
        loss = wrapped(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        mean = loss.detach().clone()
        dist.all_reduce(mean)
        # equal-sized local batches: the mean of the ranks' losses is the whole batch's loss (transformers computes
        # the loss in float32: the runs agree to its rounding, not to float64's)
        assert abs(mean.item() / world - ref[step]) <= 2e-5, (engine, step, mean.item() / world, ref[step])


@pytest.mark.parametrize("engine,checkpointing", [("ddp", False), ("fsdp2", False), ("ddp", True)])
def test_training_engines(engine, checkpointing):
    pytest.importorskip("transformers")
    _spawn(_engine_case, 2, engine, checkpointing)

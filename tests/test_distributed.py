"""Generated optimizers under torch.distributed: 2 gloo ranks on CPU, spawned once for the module.

Every shipped spec runs on one path (the paths rotate over the registry), Adam and LAMB on all
four (fused in the Triton interpreter; `cpu`, the fused C++ backend, selected with
runtime.cpu_fused("cpp")), and the other reduction shapes on `cpu` too: NvNovoGrad (device scalar
states) and SGDP (channel reductions), whose partials reach the same combine, and so the same
joins across ranks and shards, as the Triton kernel's.

* ZeroRedundancyOptimizer (ZeRO-1): each rank steps only its shard of the state; the params
  (ZeRO broadcasts them after each step) must equal single-process training bit for bit, except
  where a group reduction is joined across ranks (LAMB's global gradient norm,
  `partitioned=True`): there, within rounding.
  `consolidate_state_dict` gathers the state on rank 0; that state_dict loads into a
  single-process optimizer that continues exactly as the ZeRO one does.
* FSDP2 (`fully_shard`, DTensor params sharded unevenly along dim 0, one rank holding no element
  of some tensors): against single-process training on the global batch within rounding.
* DistributedDataParallel: a small MLP, each rank half of the global batch; the generated
  optimizer steps on DDP's averaged gradients and must track single-process training on the whole
  batch within rounding (DDP's all-reduce adds in another order).
"""
import contextlib
import copy
import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.optim import ZeroRedundancyOptimizer

from optdsl import runtime
from optdsl.loader import import_shipped
from optdsl.registry import REGISTRY, with_set_gradients

os.environ.setdefault("TRITON_INTERPRET", "1")

PATHS = {"loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}, "cpu": {"fused": True}}
SHAPES = [(7, 3), (5,), (4, 4), (3,), (2, 3, 2), (6,)]
ZERO_STEPS, CONTINUE_STEPS, DDP_STEPS = 3, 2, 3
# the specs whose group reductions are joined across ranks: equal within rounding, not bitwise
JOINED = {"Lamb"}
WORLD = 2

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")   # DDP's and ZeRO's imports


def cases():
    # (a spec with row or column states, or a whole-matrix op, refuses DTensor shards:
    # tests/test_factored.py, tests/test_muon.py)
    names = sorted(n for n in with_set_gradients() if not import_shipped(n)._dtensor_refused)
    cases = [(name, list(PATHS)[k % 3]) for k, name in enumerate(names)]
    cases += [(name, path) for name in ("Adam", "Lamb") for path in PATHS if (name, path) not in cases]
    return cases + [("NvNovoGrad", "cpu"), ("SGDP", "cpu")]


def whole_param_cases():
    """The specs that refuse DTensor shards (row or column states, a whole-matrix op: tests/test_factored.py,
    tests/test_muon.py): under ZeRO and DDP each rank steps whole params, on the paths they have."""
    names = sorted(n for n in with_set_gradients() if import_shipped(n)._dtensor_refused)
    return [(name, path) for name in names for path in ("loop", "foreach")]


def backend(path: str):
    """The fused backend CPU tensors run: the C++ one for the `cpu` path (the suite's default under
    TRITON_INTERPRET=1 is the Triton kernel)."""
    return runtime.cpu_fused("cpp") if path == "cpu" else contextlib.nullcontext()


def options(name: str) -> dict:
    return dict(REGISTRY[name].base)


def make_params(name=None):
    """The params of SHAPES (each of a rank the spec's reference takes: Muon's matrices, Entry.shapes_for)."""
    g = torch.Generator().manual_seed(0)
    shapes = REGISTRY[name].shapes_for(SHAPES) if name else SHAPES
    return [torch.nn.Parameter(torch.randn(s, generator=g)) for s in shapes]


def taken(name, params):
    """The params the spec takes (Muon: the weights; the biases then stay as they are)."""
    ranks = REGISTRY[name].ranks
    return [p for p in params if ranks is None or p.ndim in ranks]


def set_grads(params, step):
    g = torch.Generator().manual_seed(100 + step)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g)


def run(opt, params, steps, first=0):
    for s in range(first, first + steps):
        set_grads(params, s)
        opt.step()


def make_model():
    """Shapes that shard unevenly over 2 ranks along dim 0: (5, 6) and (5,) split 3/2, and the
    last layer's (1, 5) and (1,) leave rank 1 with no element at all."""
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 1))


def fully_sharded_model(mesh):
    from torch.distributed.fsdp import fully_shard
    model = make_model()
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer, mesh=mesh)
    return fully_shard(model, mesh=mesh)


def batch(step):
    g = torch.Generator().manual_seed(200 + step)
    return torch.randn(8, 6, generator=g), torch.randn(8, 1, generator=g)


def train(model, opt, steps, part=None):
    """`steps` of MSE training on the global batch, or on this rank's half of it (`part`)."""
    for s in range(steps):
        x, y = batch(s)
        if part is not None:
            x, y = x.chunk(WORLD)[part], y.chunk(WORLD)[part]
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()


def _worker(rank, init, out):
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD)
    results = {"zero": {}, "ddp": {}, "fsdp": {}}
    params = make_params()
    opt = ZeroRedundancyOptimizer(params, optimizer_class=import_shipped("Lamb"), **options("Lamb"), foreach=False)
    run(opt, params, ZERO_STEPS)
    results["zero_unjoined"] = [p.detach().clone() for p in params]
    try:
        import_shipped("Lamb")([{"params": [torch.nn.Parameter(torch.ones(2))]}, {"params": []}], partitioned=True)
        results["empty_group"] = None
    except ValueError as e:
        results["empty_group"] = str(e)
    for name, path in cases() + whole_param_cases():
        params = make_params(name)
        cls = import_shipped(name)
        opt = ZeroRedundancyOptimizer(params, optimizer_class=cls, partitioned=True, **options(name), **PATHS[path])
        with backend(path):
            run(opt, params, ZERO_STEPS)
        opt.consolidate_state_dict(to=0)
        # a copy: rank 0's own shard in it is the live state, which the next steps change
        state = copy.deepcopy(opt.state_dict()) if rank == 0 else None
        after = [p.detach().clone() for p in params]
        with backend(path):
            run(opt, params, CONTINUE_STEPS, ZERO_STEPS)
        if rank == 0:
            results["zero"][(name, path)] = (after, state, [p.detach().clone() for p in params])
    for name, path in cases() + whole_param_cases():
        model = make_model()
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        opt = import_shipped(name)(taken(name, ddp.parameters()), **options(name), **PATHS[path])
        with backend(path):
            train(ddp, opt, DDP_STEPS, part=rank)
        if rank == 0:
            results["ddp"][(name, path)] = [p.detach().clone() for p in model.parameters()]
    from torch.distributed.device_mesh import init_device_mesh
    mesh = init_device_mesh("cpu", (WORLD,))
    for name, path in cases():
        model = fully_sharded_model(mesh)
        opt = import_shipped(name)(model.parameters(), **options(name), **PATHS[path])
        with backend(path):
            train(model, opt, DDP_STEPS, part=rank)
        full = [p.full_tensor().detach().clone() for p in model.parameters()]
        if rank == 0:
            results["fsdp"][(name, path)] = full
            results["fsdp_local"] = [tuple(p.to_local().shape) for p in model.parameters()]
        elif name == "Adam" and path == "loop":
            results["fsdp_rank1_shapes"] = [tuple(p.to_local().shape) for p in model.parameters()]
    if rank == 1:
        torch.save(results["fsdp_rank1_shapes"], out + ".rank1")
    if rank == 0:
        torch.save(results, out)
    dist.barrier()
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks():
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "results.pt")
        mp.spawn(_worker, args=(f"file://{os.path.join(d, 'init')}", out), nprocs=WORLD)
        results = torch.load(out, weights_only=False)
        results["fsdp_rank1_shapes"] = torch.load(out + ".rank1")
        return results


def _same(a, b, exact: bool) -> bool:
    if exact:
        return all(torch.equal(x, y) for x, y in zip(a, b))
    return all(torch.allclose(x, y, rtol=1e-5, atol=1e-6) for x, y in zip(a, b))


@pytest.mark.parametrize("name,path", cases() + whole_param_cases())
def test_zero_shards_state_and_matches_single_process(ranks, name, path):
    after, state, continued = ranks["zero"][(name, path)]
    cls = import_shipped(name)
    params = make_params(name)
    single = cls(params, **options(name), **PATHS[path])
    with backend(path):
        run(single, params, ZERO_STEPS)
    assert _same(after, params, exact=name not in JOINED), f"{name} {path}: ZeRO differs from one process"
    # the consolidated state continues in one process exactly as ZeRO continued
    resumed_params = [torch.nn.Parameter(t.clone()) for t in after]
    resumed = cls(resumed_params, **options(name), **PATHS[path])
    resumed.load_state_dict(state)
    with backend(path):
        run(resumed, resumed_params, CONTINUE_STEPS, ZERO_STEPS)
    assert _same(continued, resumed_params, exact=name not in JOINED), f"{name} {path}: resumed run differs"
    assert len(state["state"]) == len(SHAPES)


def test_an_unjoined_group_norm_differs(ranks):
    """Why `partitioned=True` exists: without it, LAMB's global norm is each rank's shard's."""
    params = make_params()
    run(import_shipped("Lamb")(params, **options("Lamb"), foreach=False), params, ZERO_STEPS)
    assert not _same(ranks["zero_unjoined"], params, exact=False)


@pytest.mark.parametrize("name,path", cases() + whole_param_cases())
def test_ddp_matches_single_process_on_the_global_batch(ranks, name, path):
    model = make_model()
    opt = import_shipped(name)(taken(name, model.parameters()), **options(name), **PATHS[path])
    with backend(path):
        train(model, opt, DDP_STEPS)
    got = ranks["ddp"][(name, path)]
    for a, b in zip(got, model.parameters()):
        torch.testing.assert_close(a, b.detach(), rtol=1e-4, atol=1e-5, msg=f"{name} {path}")


@pytest.mark.parametrize("name,path", cases())
def test_fsdp2_matches_single_process_on_uneven_shards(ranks, name, path):
    """FSDP2's DTensor params: the eager paths on DTensors (DTensor all-reduces a reduction's
    Partial value), the fused kernel on each rank's local shard with its per-tensor and group
    folds all-reduced at the combine. A LAMB trust ratio and global norm equal the unsharded ones."""
    model = make_model()
    opt = import_shipped(name)(model.parameters(), **options(name), **PATHS[path])
    with backend(path):
        train(model, opt, DDP_STEPS)
    for a, b in zip(ranks["fsdp"][(name, path)], model.parameters()):
        torch.testing.assert_close(a, b.detach(), rtol=1e-4, atol=1e-5, msg=f"{name} {path}")


def test_fsdp2_shards_are_uneven_and_one_is_empty(ranks):
    assert ranks["fsdp_local"] == [(3, 6), (3,), (1, 5), (1,)]
    assert ranks["fsdp_rank1_shapes"] == [(2, 6), (2,), (0, 5), (0,)]


def test_partitioned_refuses_a_rank_without_a_share_of_a_group(ranks):
    assert "param group 1 has no parameters on rank 0" in ranks["empty_group"]


def test_partitioned_needs_an_initialised_process_group():
    with pytest.raises(RuntimeError, match="partitioned=True needs torch.distributed"):
        import_shipped("Lamb")(make_params(), partitioned=True)

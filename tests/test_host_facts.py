"""The fused launch helper (optdsl.host_facts, templates/optdsl_host.cpp): the facts it reads in
one C++ pass are the ones the Python passes read, its step advance is torch's add bit for bit,
and a fused step that reads its facts in C++ is the one that reads them in Python."""
import pytest
import torch

from optdsl import host_facts, optim, runtime

pytestmark = pytest.mark.skipif(not host_facts.available("cpu", "cpp"), reason="needs a C++ compiler and ninja")


def _streams():
    g = torch.Generator().manual_seed(0)
    sizes = [int(n) for n in torch.randint(1, 300, (40,), generator=g)]
    params = [torch.randn(n, generator=g) for n in sizes]
    return [params, [torch.randn_like(p) for p in params], [torch.zeros_like(p) for p in params]]


def _same(a: host_facts.Facts, b: host_facts.Facts):
    assert torch.equal(a.addresses, b.addresses) and torch.equal(a.numels, b.numels)
    assert (a.dtypes, a.contiguous, a.aligned, a.one_device) == (b.dtypes, b.contiguous, b.aligned, b.one_device)


def test_facts_match_the_python_passes():
    streams = _streams()
    facts = host_facts.read(streams)
    _same(facts, host_facts.read_in_python(streams))
    assert facts.uniform() and facts.dtypes == (0, 0, 0) and facts.aligned


@pytest.mark.parametrize("change", ["bf16 grad", "transposed", "odd offset", "complex", "int state"])
def test_facts_see_what_makes_a_launch_take_the_copying_path(change):
    params, grads, states = _streams()
    base = torch.randn(64, 64)
    if change == "bf16 grad":
        grads[3] = grads[3].bfloat16()
    elif change == "transposed":
        params[5], grads[5], states[5] = base.t(), torch.randn(64, 64).t(), torch.zeros(64, 64).t()
    elif change == "odd offset":
        params[7] = base.view(-1)[1:1 + params[7].numel()]
    elif change == "complex":
        states[2] = torch.zeros(params[2].numel(), dtype=torch.complex64)
    else:
        states[9] = torch.zeros(params[9].numel(), dtype=torch.int32)
    streams = [params, grads, states]
    facts = host_facts.read(streams)
    _same(facts, host_facts.read_in_python(streams))
    assert not facts.uniform() or change == "odd offset"
    assert facts.aligned == (change not in ("odd offset",))


def test_facts_refuse_what_is_not_a_tensor():
    params, grads, _ = _streams()
    assert host_facts.read([params, grads[:-1] + [None]]) is None
    assert host_facts.read([[], []]) is None
    # a sparse tensor has no strides, a meta one no memory: refused, never an exception through ctypes
    assert host_facts.read([[torch.zeros(3)], [torch.eye(3).to_sparse()]]) is None
    assert host_facts.read([[torch.zeros(3)], [torch.zeros(3, device="meta")]]) is None
    assert host_facts.advance_steps([torch.tensor(1.0).to_sparse()]) is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_advance_steps_is_torch_add_then_item(dtype):
    values = [0.0, 1.0, 2.0 ** 24, 2.0 ** 24 + 2, 7.5, 1e30]
    ours = [torch.tensor(v, dtype=dtype) for v in values]
    theirs = [t.clone() for t in ours]
    versions = [t._version for t in ours]
    got = host_facts.advance_steps(ours)
    torch._foreach_add_(theirs, 1)
    assert [t.item() for t in ours] == [t.item() for t in theirs] == got
    assert all(t._version > v for t, v in zip(ours, versions))


def test_advance_steps_changes_nothing_where_it_refuses():
    steps = [torch.tensor(3.0), torch.tensor([1.0, 2.0])]   # a two-element "step"
    assert host_facts.advance_steps(steps) is None
    assert steps[0].item() == 3.0 and steps[1].tolist() == [1.0, 2.0]
    assert host_facts.advance_steps([torch.tensor(3.0), torch.tensor(4)]) is None   # an int tensor


@pytest.mark.parametrize("name", ["Adam", "Lamb"])   # elementwise, and phased (a reduction per tensor)
@pytest.mark.parametrize("backend", ["cpp", "triton"])
@pytest.mark.parametrize("case", ["kept grads", "fresh grads", "moved param", "transposed param"])
def test_a_fused_step_with_the_helper_is_the_step_without(monkeypatch, name, backend, case):
    """The same training, bit for bit, with the facts read in C++ and in Python, through the
    launches whose tables the facts feed: kept grads (tables cached), fresh grads each step (the
    grad table rebuilt), a param whose storage moves mid-run (`p.data = ...`: its address
    changes, so must its table) and one that becomes a transposed view (the copying path)."""
    def train(mode):
        monkeypatch.setenv("OPTDSL_HOST_FACTS", mode)
        g = torch.Generator().manual_seed(1)
        params = [torch.randn(n, generator=g).requires_grad_() for n in (5, 130, 64, 1, 257)]
        params.append(torch.randn(16, 8, generator=g).requires_grad_())
        opt = getattr(optim, name)(params, lr=0.01, weight_decay=0.1, fused=True)
        with runtime.cpu_fused(backend):
            for step in range(4):
                for i, p in enumerate(params):
                    if case != "kept grads" or p.grad is None:
                        p.grad = torch.randn(p.shape, generator=g)
                    else:
                        p.grad.copy_(torch.randn(p.shape, generator=g))
                if step == 2 and case == "moved param":
                    params[1].data = params[1].data.clone()
                if step == 2 and case == "transposed param":
                    params[5].data = params[5].data.reshape(8, 16).t()
                    params[5].grad = torch.randn(params[5].shape, generator=g)
                    state = opt.state[params[5]]
                    for key, t in list(state.items()):
                        if t.shape == (16, 8):
                            state[key] = t.reshape(8, 16).t()
                opt.step()
        return [p.detach().clone() for p in params] + [t.clone() for s in opt.state.values() for t in s.values()]

    ours, theirs = train("cpp"), train("python")
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))


def test_the_default_reads_facts_in_python_only_for_the_interpreter(monkeypatch):
    monkeypatch.delenv("OPTDSL_HOST_FACTS", raising=False)
    assert host_facts.choice("cpu", "triton") == "python"
    assert host_facts.choice("cpu", "cpp") == "cpp"
    assert host_facts.choice("cuda", "triton") == "cpp"
    monkeypatch.setenv("OPTDSL_HOST_FACTS", "fast")
    with pytest.raises(ValueError, match="OPTDSL_HOST_FACTS must be 'cpp' or 'python'"):
        host_facts.choice("cpu", "cpp")


def test_group_grads_are_the_grad_objects_or_none_where_the_loop_must_look():
    params = [torch.nn.Parameter(torch.randn(3)), torch.randn(2, requires_grad=True)]
    for p in params:
        p.grad = torch.randn_like(p)
    grads, has_complex = host_facts.group_grads(params)
    assert all(g is p.grad for g, p in zip(grads, params)) and not has_complex
    complex_param = torch.nn.Parameter(torch.randn(2, dtype=torch.complex64))
    complex_param.grad = torch.randn_like(complex_param)
    assert host_facts.group_grads(params + [complex_param])[1]
    missing = torch.nn.Parameter(torch.randn(2))
    assert host_facts.group_grads(params + [missing]) is None
    sparse = torch.nn.Parameter(torch.randn(3, 2))
    sparse.grad = torch.randn(3, 2).to_sparse()
    assert host_facts.group_grads(params + [sparse]) is None

    class Tagged(torch.nn.Parameter):   # a subclass may read `.grad` its own way: the loop decides
        pass
    tagged = Tagged(torch.randn(2))
    tagged.grad = torch.randn(2)
    assert host_facts.group_grads(params + [tagged]) is None

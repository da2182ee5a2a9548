"""Precision as an option of every spec: `state_dtype` and `stochastic_rounding` (optdsl.precision)."""
import math

import pytest
import torch
import triton
import triton.language as tl

from optdsl.loader import import_shipped
from optdsl.precision import stochastic_round
from optdsl.registry import REGISTRY, with_set_gradients
from optdsl.runtime import cpu_fused
from optdsl.triton_lib import _stochastic_bf16

PATHS = {"loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def _params(dtype=torch.float32, name=None):
    g = torch.Generator().manual_seed(0)
    shapes = ((9, 4), (6,), ())
    shapes = REGISTRY[name].shapes_for(shapes) if name else shapes
    return [torch.nn.Parameter(torch.randn(s, generator=g).to(dtype)) for s in shapes]


def _steps(opt, params, n, first=0):
    for s in range(first, first + n):
        g = torch.Generator().manual_seed(10 + s)
        for p in params:
            p.grad = torch.randn(p.shape, generator=g).to(p.dtype)
        opt.step()


@pytest.mark.parametrize("name, path", [(name, path) for name in sorted(with_set_gradients()) for path in PATHS
                                        if REGISTRY[name].supports(path)])
def test_bf16_state_for_every_spec_and_path(name, path):
    """Elementwise states are stored in bf16, scalar states and `step` stay fp32, the math stays in
    fp32 (so the result tracks the fp32 run to bf16's precision), on every path."""
    cls = import_shipped(name)
    base = dict(REGISTRY[name].base)
    low, full = _params(name=name), _params(name=name)
    opt = cls(low, state_dtype=torch.bfloat16, **base, **PATHS[path])
    ref = cls(full, **base, **PATHS[path])
    _steps(opt, low, 4)
    _steps(ref, full, 4)
    kinds = opt._active_states(opt.param_groups[0])
    scalar = {k for k, kind in kinds.items() if isinstance(kind, tuple) and kind[0] in ("scalar", "device_scalar")}
    for p in low:
        for key, t in opt.state[p].items():
            if key == "step" or key in scalar:
                assert t.dtype == torch.float32, (key, t.dtype)
            else:
                assert t.dtype == torch.bfloat16, (key, t.dtype)
    for a, b in zip(low, full):
        # bf16 state: a relative error of 2^-8 per store, over 4 steps, through lr-sized updates
        torch.testing.assert_close(a.detach(), b.detach(), rtol=0.02, atol=0.02)


@pytest.mark.parametrize("path", PATHS)
def test_the_three_paths_agree_on_bf16_state(path):
    """Every path does its math in fp32 and rounds each bf16 state once per step."""
    out = {}
    for p_name, kw in PATHS.items():
        params = _params()
        opt = import_shipped("Adam")(params, lr=0.01, state_dtype=torch.bfloat16, **kw)
        _steps(opt, params, 3)
        out[p_name] = [p.detach() for p in params]
    for a, b in zip(out["loop"], out[path]):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def _ulp(x: torch.Tensor) -> torch.Tensor:
    """The spacing of the two bf16 neighbours of each float32 x (truncation and one up in magnitude)."""
    lower = (x.view(torch.int32) & -65536).view(torch.float32)
    upper = ((x.view(torch.int32) & -65536) + 65536).view(torch.float32)
    return (upper - lower).abs().double()


def test_stochastic_rounding_is_unbiased_within_a_hoeffding_bound():
    """Each rounding is one of x's two bf16 neighbours, a bounded variable of range one ulp, so by
    Hoeffding's inequality and a union bound over n elements, the mean of N independent roundings
    is within t = ulp * sqrt(ln(2 n / delta) / (2 N)) of x for every element, with probability at
    least 1 - delta. With n = 4096, N = 256, delta = 1e-6: t = 0.211 ulp. Rounding to nearest is
    off by up to 0.5 ulp, and the same test rejects it."""
    n, draws, delta = 4096, 256, 1e-6
    x = torch.randn(n, generator=torch.Generator().manual_seed(0)) * 10
    bound = math.sqrt(math.log(2 * n / delta) / (2 * draws))
    total = torch.zeros(n, dtype=torch.float64)
    for k in range(draws):
        r = stochastic_round(x, torch.Generator().manual_seed(k))
        assert r.dtype == torch.bfloat16
        total += r.double()
    ulp = _ulp(x)
    assert float(((total / draws - x.double()).abs() / ulp).max()) <= bound
    nearest = (x.to(torch.bfloat16).double() - x.double()).abs() / ulp
    assert float(nearest.max()) > bound


def test_stochastic_rounding_keeps_inf_nan_and_exact_values():
    x = torch.tensor([float("inf"), -float("inf"), float("nan"), 1.0, -2.5, 0.0])
    r = stochastic_round(x, torch.Generator().manual_seed(0)).float()
    assert r[0] == float("inf") and r[1] == -float("inf") and torch.isnan(r[2])
    assert r[3:].tolist() == [1.0, -2.5, 0.0]


def _least_squares(dtype, stochastic_rounding, steps=300, **path):
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(64, 16, generator=g), torch.randn(64, generator=g)
    w = torch.nn.Parameter(torch.randn(16, generator=g).to(dtype))
    opt = import_shipped("SGD")([w], lr=1e-3, stochastic_rounding=stochastic_rounding, rounding_seed=1, **path)
    for _ in range(steps):
        opt.zero_grad()
        ((a @ w.float() - b) ** 2).mean().backward()
        opt.step()
    return w.detach().float()


@pytest.mark.parametrize("path", ["loop", "fused"])
def test_bf16_params_with_stochastic_rounding_track_fp32_closer_than_nearest(path):
    """SGD on least squares with lr 1e-3: most updates are below half a bf16 ulp, so rounding to
    nearest drops them and stalls; stochastic rounding keeps them in expectation. Stated margin:
    after 300 steps the SR run is at least 4x closer to the fp32 run than the nearest-rounded one
    (measured: about 20x on the loop path, where the bits come from torch.Generator). The fused
    kernel draws its own, from Philox, and runs 150 steps under the interpreter's cost: the same
    4x margin (measured: about 13x; 24x after 300 steps)."""
    steps = 150 if path == "fused" else 300
    fp32 = _least_squares(torch.float32, False, steps)
    nearest = _least_squares(torch.bfloat16, False, steps, **PATHS[path])
    sr = _least_squares(torch.bfloat16, True, steps, **PATHS[path])
    assert float((sr - fp32).norm()) * 4 < float((nearest - fp32).norm())


@pytest.mark.parametrize("path", PATHS)
def test_stochastic_rounding_is_reproducible_from_the_seed_and_a_checkpoint(path):
    def run(seed, split=None):
        params = _params(torch.bfloat16)
        opt = import_shipped("Adam")(params, lr=1e-3, state_dtype=torch.bfloat16, stochastic_rounding=True,
                                     rounding_seed=seed, **PATHS[path])
        if split is None:
            _steps(opt, params, 4)
            return params, opt
        _steps(opt, params, split)
        saved = opt.state_dict()
        copies = [torch.nn.Parameter(p.detach().clone()) for p in params]
        resumed = import_shipped("Adam")(copies, lr=1e-3, state_dtype=torch.bfloat16, stochastic_rounding=True,
                                         rounding_seed=seed, **PATHS[path])
        resumed.load_state_dict(saved)
        _steps(resumed, copies, 4 - split, split)
        return copies, resumed

    a, opt = run(7)
    b, _ = run(7)
    c, _ = run(8)
    resumed, opt2 = run(7, split=2)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
    assert all(torch.equal(x, y) for x, y in zip(a, resumed))
    for p, q in zip(a, resumed):   # the checkpoint kept the state dtypes
        for key, t in opt.state[p].items():
            assert opt2.state[q][key].dtype == t.dtype
            assert torch.equal(opt2.state[q][key], t)


def test_a_checkpoint_round_trips_bf16_state_exactly():
    params = _params()
    opt = import_shipped("Adam")(params, lr=1e-2, state_dtype=torch.bfloat16)
    _steps(opt, params, 2)
    other = import_shipped("Adam")(_params(), lr=1e-2, state_dtype=torch.bfloat16)
    other.load_state_dict(opt.state_dict())
    for p, q in zip(opt.param_groups[0]["params"], other.param_groups[0]["params"]):
        for key, t in opt.state[p].items():
            assert other.state[q][key].dtype == t.dtype and torch.equal(other.state[q][key], t)


@pytest.mark.parametrize("kwargs,match", [
    (dict(state_dtype=torch.int32), "state_dtype must be None or one of"),
    (dict(state_dtype="bf16"), "state_dtype must be None or one of"),
    (dict(stochastic_rounding=1), "stochastic_rounding must be a bool"),
    (dict(rounding_seed=-1), "rounding_seed must be a non-negative int"),
])
def test_precision_options_are_checked(kwargs, match):
    with pytest.raises(ValueError, match=match):
        import_shipped("Adam")(_params(), **kwargs)


def test_the_cost_report_counts_state_bytes_in_the_state_dtype():
    """`optdsl show adam --state-dtype bf16`: 4 B of state per parameter element (8 in fp32),
    20 B moved per element (28 in fp32)."""
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-m", "optdsl", "show", "adam", "--state-dtype", "bf16", "--no-color"],
                         capture_output=True, text=True, check=True).stdout
    assert "state per parameter element: 4 B (6 B with every optional state)" in out
    assert "bytes moved per element: 20 B/element" in out


# ---- stochastic rounding in the fused Triton kernel (optdsl.triton_lib.store_stream) ------------

@triton.jit
def _round_bits(x_ptr, out_ptr, seed, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    rounded = _stochastic_bf16(tl.load(x_ptr + offs), seed, offs.to(tl.int64), 0)
    tl.store(out_ptr + offs, rounded.to(tl.int32))


def _fused_sgd_to(x: torch.Tensor, start: torch.Tensor, opt, p) -> None:
    """One fused SGD step (lr 1) that stores x = start + (x - start), computed exactly in fp32:
    the kernel's rounding is all that stands between x and the stored bf16 value."""
    p.data.copy_(start)
    p.grad = (start.float() - x).to(torch.bfloat16)
    opt.step()


def test_fused_stochastic_rounding_is_unbiased_within_a_hoeffding_bound():
    """The fused kernel's stores, as the eager test above: x = a bf16 value plus a fraction of its
    ulp (exact in fp32), stored by 256 fused steps, each drawing new bits (rounding_step counts
    them). Every result is one of x's two bf16 neighbours, and their mean is within the Hoeffding
    bound of x for all 4096 elements: t = 0.211 ulp (delta = 1e-6). With stochastic_rounding off
    the kernel rounds to nearest, the same value every step, off by up to half an ulp: one step
    of it fails the bound."""
    n, draws, delta = 4096, 256, 1e-6
    g = torch.Generator().manual_seed(1)
    start = (torch.randn(n, generator=g) * 10).to(torch.bfloat16)
    ulp = _ulp(start.float()).float()
    fraction = (torch.randint(1, 256, (n,), generator=g) / 256.0).to(torch.bfloat16)   # 8 bits: exact sums
    x = start.float() + fraction.float() * ulp * torch.sign(start.float())
    bound = math.sqrt(math.log(2 * n / delta) / (2 * draws))

    def mean_error(sr: bool, draws: int) -> float:
        p = torch.nn.Parameter(start.clone())
        opt = import_shipped("SGD")([p], lr=1.0, stochastic_rounding=sr, rounding_seed=3, fused=True)
        lower, upper = (x.view(torch.int32) & -65536).view(torch.float32), start.float() + ulp * torch.sign(start.float())
        total = torch.zeros(n, dtype=torch.float64)
        for _ in range(draws):
            _fused_sgd_to(x, start, opt, p)
            got = p.detach().float()
            assert bool(((got == lower) | (got == upper)).all())
            total += got.double()
        assert opt.param_groups[0].get("rounding_step", 0) == (draws if sr else 0)
        return float(((total / draws - x.double()).abs() / ulp.double()).max())

    assert mean_error(True, draws) <= bound
    assert mean_error(False, 1) > bound   # rounding to nearest: the same value every draw


def test_fused_stochastic_rounding_keeps_inf_nan_and_exact_values():
    """Exact bf16 values (and 0, +-inf) are stored as they are, NaN as NaN. A finite value above
    the largest bf16 number (3.39e38) rounds to inf with probability (x - max) / ulp, inf taking the
    next number's place (as on the eager path): at half an ulp, 4096 elements give between 40% and
    60% inf (Hoeffding: outside with probability below 1e-35), the rest the largest number."""
    big = torch.finfo(torch.bfloat16).max
    values = [1.0, -2.5, 0.0, float("inf"), -float("inf"), float("nan"), 3.0e-39]
    start = torch.tensor(values + [big] * 4096).to(torch.bfloat16)
    x = start.float().clone()
    x[len(values):] = big + 2.0 ** 119   # half an ulp (2^120) above; exact in fp32
    x[len(values) - 1] = start[len(values) - 1].float()   # a subnormal bf16: exact
    p = torch.nn.Parameter(start.clone())
    opt = import_shipped("SGD")([p], lr=1.0, stochastic_rounding=True, fused=True)
    p.grad = torch.zeros_like(p)
    p.grad[len(values):] = -2.0 ** 119
    opt.step()
    got = p.detach().float()
    head = got[:len(values)]
    assert head[:5].tolist() == [1.0, -2.5, 0.0, float("inf"), -float("inf")] and torch.isnan(head[5])
    assert head[6] == start[6].float()
    tail = got[len(values):]
    assert bool(((tail == float("inf")) | (tail == big)).all())
    assert 0.4 < float((tail == float("inf")).double().mean()) < 0.6


def _sr_run(seed, steps=3, name="Adam", sr=True, **path):
    """`steps` of `name` with bf16 params and bf16 state, stochastic rounding from `seed`."""
    g = torch.Generator().manual_seed(2)
    shapes = ((9, 4), (6,), (), (300,), (5, 70))
    params = [torch.nn.Parameter(torch.randn(s, generator=g).to(torch.bfloat16)) for s in shapes]
    opt = import_shipped(name)(params, lr=1e-3, state_dtype=torch.bfloat16, stochastic_rounding=sr,
                               rounding_seed=seed, **path)
    _steps(opt, params, steps)
    return params, opt


@pytest.mark.parametrize("name", ["Adam", "Lamb"])
def test_fused_stochastic_rounding_does_not_depend_on_the_block_size(name, monkeypatch):
    """An element's random bits are keyed by its tensor's seed and counted by its offset in the
    tensor, not by its program: blocks of 64 elements (several programs per tensor, and for Lamb,
    a reduction spec, its phased work list) store the same bits as the default one block per
    tensor. Lamb's final phase is the only one that stores."""
    from optdsl import kernel_runtime
    default, opt = _sr_run(5, steps=2, name=name, fused=True)
    monkeypatch.setattr(kernel_runtime, "_full_block", lambda device: 64)
    small, opt_small = _sr_run(5, steps=2, name=name, fused=True)
    for a, b in zip(default, small):
        assert torch.equal(a, b)
    for a, b in zip(default, small):
        for key, t in opt.state[a].items():
            assert torch.equal(opt_small.state[b][key], t), key
    nearest, _ = _sr_run(5, steps=2, name=name, sr=False, fused=True)   # and it did round stochastically
    assert not all(torch.equal(a, b) for a, b in zip(default, nearest))


def test_the_fused_kernel_rounds_itself_without_working_copies(monkeypatch):
    """fused=True with stochastic rounding and bf16 state makes no float32 working copies (the
    kernel upcasts and rounds in its stores: one launch per step, nothing else); the eager paths
    and the fused C++ backend keep them (one per step). The fused bits are Philox's, the eager paths'
    torch.Generator's: one seed gives different bits on the two (parity of distribution: both
    within a few bf16 ulps of each other), each reproducible."""
    from optdsl import kernel_runtime, precision
    group = {"stochastic_rounding": True, "fused": True}
    params = [torch.zeros(3, dtype=torch.bfloat16)]
    assert isinstance(precision.working_copies(dict(group), params, params, {}, in_kernel=False), precision.WorkingCopies)
    assert isinstance(precision.working_copies(dict(group), params, params, {}, in_kernel=True), precision.KernelRounding)

    def refuse(*args, **kwargs):
        raise AssertionError("a working copy on the fused kernel's path")
    launches = kernel_runtime.LAUNCHES[0]
    with monkeypatch.context() as m:
        m.setattr(precision.WorkingCopies, "__init__", refuse)
        fused, opt = _sr_run(7, fused=True)
    assert kernel_runtime.LAUNCHES[0] - launches == 3
    assert opt.param_groups[0]["rounding_step"] == 3
    again, _ = _sr_run(7, fused=True)
    eager, _ = _sr_run(7, foreach=False)
    assert all(torch.equal(a, b) for a, b in zip(fused, again))
    assert not all(torch.equal(a, b) for a, b in zip(fused, eager))
    for a, b in zip(fused, eager):
        torch.testing.assert_close(a.float(), b.float(), rtol=0.02, atol=1e-2)
    made, init = [], precision.WorkingCopies.__init__

    def spy(self, *args, **kwargs):
        made.append(self)
        init(self, *args, **kwargs)
    with monkeypatch.context() as m, cpu_fused("cpp"):   # the C++ backend rounds to nearest: copies, once a step
        m.setattr(precision.WorkingCopies, "__init__", spy)
        _sr_run(7, fused=True)
    assert len(made) == 3


def test_fused_stochastic_rounding_off_stores_what_rounding_to_nearest_does():
    """With stochastic_rounding off, the fused kernel on bf16 stores is the default kernel (dtype
    code BF16, no seeds: tests/test_kernel_compile.py checks it holds no Philox): the stores are
    x rounded to nearest even, bit for bit."""
    n = 4096
    g = torch.Generator().manual_seed(4)
    start = (torch.randn(n, generator=g) * 10).to(torch.bfloat16)
    x = start.float() + (torch.randint(-128, 128, (n,), generator=g) / 256.0) * _ulp(start.float()).float()
    p = torch.nn.Parameter(start.clone())
    opt = import_shipped("SGD")([p], lr=1.0, fused=True)
    _fused_sgd_to(x, start, opt, p)
    assert torch.equal(p.detach(), x.to(torch.bfloat16))


def test_the_kernel_keeps_a_nan_whose_payload_the_noise_would_carry_into_the_sign():
    """A GPU's arithmetic NaN is 0x7FFFFFFF: its low half plus the noise carries into the sign
    bit (-0.0 or a tiny negative number, not NaN) unless the store keeps NaN apart. The helper
    itself, on such bit patterns, through a small kernel under the interpreter."""
    bits = torch.tensor([0x7FFFFFFF, -1, 0x7FC00001, 0x7F800001] * 16, dtype=torch.int32)   # -1: 0xFFFFFFFF
    out = torch.zeros(bits.numel(), dtype=torch.int32)
    _round_bits[(1,)](bits.view(torch.float32), out, 12345, BLOCK=bits.numel())
    assert torch.isnan((out.to(torch.int16)).view(torch.bfloat16)).all()

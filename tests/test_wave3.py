"""Wave 3 (CATALOG.md): per-tensor reductions and scalar state, against timm, pytorch_optimizer
and the formula references of optdsl.references, driven by the registry.

* loop and foreach: every combination of the registry's grid, STEPS steps, compared with the
  reference's for-loop path (timm's and pytorch_optimizer's classes are built with foreach=False
  where they take it): parameters and every state tensor both keep under one key;
* fused (the Triton kernel, in the interpreter on CPU): the first and the last combination of each
  grid, FUSED_STEPS steps. AdamP's and SGDP's projection is 11 kernel launches a step, which the
  interpreter runs at about a second each even on tiny tensors (~11 s a step): for those two, the
  last combination only (most flags on), FUSED_SLOW_STEPS steps on FUSED_SLOW_SHAPES.

Amos is compared on tensors of at most two dimensions: for ndim >= 3 pytorch_optimizer's target
scale is sqrt(1 / size(1)), and the language has no size(1) input (see specs/amos.opt and
test_amos_scale_of_3d_tensors below).

Bit-identity: the loop path of every wave-3 spec is bit-identical to its reference (the specs
write each expression in the reference's order, with a local of its own where the reference
multiplies and then subtracts, which one expression would turn into an addcmul). The foreach
path is bit-identical too, against the same for-loop references."""
from __future__ import annotations

import inspect
from collections import defaultdict

import pytest
import torch

from optdsl.registry import REGISTRY
from optdsl.verify import SHAPES, run_pair, with_state

STEPS = 20
FUSED_STEPS = 3
FUSED_SLOW = {"AdamP", "SGDP"}
FUSED_SLOW_STEPS = 2
FUSED_SLOW_SHAPES = ((3, 4), (5,), (2, 3, 2))

WAVE3 = [e for e in REGISTRY.values() if e.wave == 3]
EXPECTED = {"Lamb", "Lars", "NvNovoGrad", "AdamP", "SGDP", "Amos", "AdaX", "FunnelledSGDM"}
BIT_IDENTICAL = {(path, n) for n in EXPECTED for path in ("loop", "foreach")}


# (spec, path) -> [identical, total, runs]
_TALLY: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])


def _label(combo: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in combo.items())


def _cases():
    for entry in WAVE3:
        for combo in entry.combos():
            for path in ("loop", "foreach"):
                yield pytest.param(entry.name, combo, path, id=f"{entry.name}-{path}-{_label(combo)}")


def _fused_cases():
    for entry in WAVE3:
        combos = entry.combos()
        if entry.name in FUSED_SLOW:
            yield pytest.param(entry.name, combos[-1], FUSED_SLOW_STEPS, FUSED_SLOW_SHAPES,
                               id=f"{entry.name}-fused{FUSED_SLOW_STEPS}-{_label(combos[-1])}")
            continue
        for combo in (combos[0], combos[-1]):
            yield pytest.param(entry.name, combo, FUSED_STEPS, SHAPES,
                               id=f"{entry.name}-fused{FUSED_STEPS}-{_label(combo)}")


def test_registry_has_every_wave3_spec_with_a_modest_grid_covering_every_hyper_and_flag():
    assert {e.name for e in WAVE3} == EXPECTED
    for e in WAVE3:
        combos = e.combos()
        assert 0 < len(combos) <= 16, e.name
        for key, values in e.grid.items():   # every level of every grid entry runs
            assert {repr(c[key]) for c in combos} == {repr(v) for v in values}, (e.name, key)
        assert e.torch_class is None and not e.reference_foreach


def _compare(name, combo, path, steps, shapes=None):
    entry = REGISTRY[name]
    ours, theirs, opt_a, opt_b = run_pair(entry, combo, path, steps, shapes=shapes or SHAPES)
    xs, ys = with_state(ours, theirs, opt_a, opt_b, check_keys=False)
    kept = any(isinstance(v, torch.Tensor) for q in theirs for v in opt_b.state.get(q, {}).values())
    assert len(xs) > len(ours) or not kept, "the reference keeps state, but no state tensor was compared"
    same = total = 0
    for x, y in zip(xs, ys):
        torch.testing.assert_close(x.detach(), y.detach())
        same += int((x.detach() == y.detach()).sum())
        total += x.numel()
    return same, total


@pytest.mark.parametrize("name, combo, path", list(_cases()))
def test_matches_reference(name, combo, path):
    same, total = _compare(name, combo, path, STEPS)
    if (path, name) in BIT_IDENTICAL:
        assert same == total, f"{total - same} of {total} elements differ from the reference in their last bits"
    tally = _TALLY[(name, path)]
    tally[0] += same
    tally[1] += total
    tally[2] += 1


@pytest.mark.parametrize("name, combo, steps, shapes", list(_fused_cases()))
def test_fused_matches_reference(name, combo, steps, shapes):
    try:
        same, total = _compare(name, combo, "fused", steps, shapes)
    except NotImplementedError as exc:   # the fused backend's reductions are still being built
        pytest.skip(f"fused path not implemented for {name}: {exc}")
    tally = _TALLY[(name, "fused")]
    tally[0] += same
    tally[1] += total
    tally[2] += 1


# The references' defaults, except where the language cannot say them (one line each, in the spec too).
DEFAULTS_DIFFER = {
    ("Lamb", "max_grad_norm"): "timm's is 1.0; an optional hyper can only default to none",
    ("SGDP", "lr"): "timm's is required; the language has no required hyper",
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_hyper_defaults_and_state_keys_are_the_references(name):
    from optdsl import optim
    entry = REGISTRY[name]
    cls = getattr(optim, name)
    p, q = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3, requires_grad=True)
    ref = entry.reference([q], **({"lr": 1e-3} if name == "SGDP" else {}))   # timm's SGDP requires lr
    ours = inspect.signature(cls).parameters
    theirs = inspect.signature(type(ref)).parameters
    skipped = {"params", "foreach", "caution", "decoupled_decay", "corrected_weight_decay", "kwargs"}
    assert {k for k in theirs if k not in skipped} <= set(ours), name
    for k in ours:
        if k in theirs and k != "params" and (name, k) not in DEFAULTS_DIFFER:
            assert ours[k].default == theirs[k].default, k
    # the same state keys after one step (the references keep `step` elsewhere, or as an int)
    p.grad, q.grad = torch.ones(4, 3), torch.ones(4, 3)
    opt = cls([p])
    opt.step()
    ref.step()
    assert set(opt.state[p]) - {"step"} == set(ref.state[q]) - {"step"}


def test_lamb_clips_by_the_global_norm_and_none_disables_it():
    """max_grad_norm divides every gradient of the group by max(global norm / max_grad_norm, 1)."""
    from optdsl import optim
    shapes = ((5, 4), (7,))
    avgs = {}
    for mgn in (None, 1.0, 1e6):
        ps = [torch.randn(s).requires_grad_() for s in shapes]
        for x in ps:
            x.grad = torch.full_like(x, 3.0)
        opt = optim.Lamb(ps, lr=0.1, betas=(0.5, 0.999), max_grad_norm=mgn)
        opt.step()
        avgs[mgn] = [opt.state[x]["exp_avg"] for x in ps]
    global_norm = 3.0 * 27 ** 0.5
    for none, huge, one in zip(avgs[None], avgs[1e6], avgs[1.0]):
        assert torch.equal(none, huge)            # a norm under max_grad_norm divides by 1
        torch.testing.assert_close(none, torch.full_like(none, 1.5))
        torch.testing.assert_close(one, torch.full_like(one, 1.5 / global_norm))


INVALID = {
    "Lamb": [{"lr": -1.0}, {"eps": -1.0}, {"weight_decay": -1.0}],
    "Lars": [{"lr": -1.0}, {"momentum": -0.1}, {"weight_decay": -1.0}, {"nesterov": True},
             {"nesterov": True, "momentum": 0.9, "dampening": 0.1}],
    "NvNovoGrad": [{"lr": -1.0}, {"eps": -1.0}, {"betas": (1.0, 0.9)}, {"betas": (0.9, -0.1)}],
}


@pytest.mark.parametrize("name, kwargs", [(n, kw) for n, cases in INVALID.items() for kw in cases],
                         ids=lambda x: x if isinstance(x, str) else "-".join(map(str, x.items())))
def test_init_rejects_invalid_hypers_in_the_references_words(name, kwargs):
    from optdsl import optim
    p = [torch.zeros(3, requires_grad=True)]
    with pytest.raises(ValueError) as theirs:
        REGISTRY[name].reference(p, **kwargs)
    with pytest.raises(ValueError) as ours:
        getattr(optim, name)(p, **kwargs)
    assert str(ours.value) == str(theirs.value)


def test_amos_scale_of_3d_tensors():
    """pytorch_optimizer.Amos scales tensors of 3 or more dims by sqrt(1 / size(1)), not by the fan-in."""
    entry = REGISTRY["Amos"]
    ours, theirs, _, _ = run_pair(entry, entry.combos()[0], "loop", 3, shapes=((3, 5, 2),))
    assert torch.equal(ours[0].detach(), theirs[0].detach())


def test_projection_runs_in_both_views():
    """AdamP's and SGDP's grids reach the channel view, the layer view and no projection (timm's
    `projection` instrumented), so every branch of the specs' projection is compared."""
    from optdsl.registry import timm_class
    import sys
    timm_class("adamp", "AdamP")
    mod = sys.modules["timm.optim.adamp"]
    seen = set()
    original = mod.projection

    def projection(p, grad, perturb, delta, wd_ratio, eps, caution=False):
        import math

        import torch.nn.functional as F
        out, wd = original(p, grad, perturb, delta, wd_ratio, eps, caution)
        channel = F.cosine_similarity(grad.reshape(grad.size(0), -1), p.reshape(p.size(0), -1), dim=1, eps=eps)
        in_channel = bool(channel.abs().max() < delta / math.sqrt(p[0].numel()))
        seen.add("none" if wd == 1.0 else "channel" if in_channel else "layer")
        return out, wd

    mod.projection = projection
    try:
        entry = REGISTRY["AdamP"]
        for combo in entry.combos():
            run_pair(entry, combo, "loop", STEPS)
    finally:
        mod.projection = original
    assert seen == {"none", "channel", "layer"}


@pytest.fixture(scope="module", autouse=True)
def _report(request):
    yield
    if not _TALLY:
        return
    lines = ["", "wave 3: bit-identical elements (parameters and state) against the references"]
    for (name, path), (same, total, runs) in sorted(_TALLY.items()):
        lines.append(f"  {name:<14} {path:<8} vs {REGISTRY[name].reference_name:<38} {runs:>3} runs  "
                     f"{same:>7}/{total:<7} ({100.0 * same / max(total, 1):5.1f}%)")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        print("\n".join(lines))
        return
    with capture.global_and_fixture_disabled():   # shown without -s too
        reporter.write_line("\n".join(lines))

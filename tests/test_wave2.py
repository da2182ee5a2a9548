"""Wave 2 (CATALOG.md): the rest of torch.optim's elementwise family against torch.optim,
driven by the registry: every spec x flag combination x path.

* loop and foreach: every combination of the registry's grid, 200 steps;
* fused (the Triton kernel, in the interpreter on CPU): every combination for FUSED_STEPS
  steps, and one combination per spec (the last of its grid, most flags on) for the full
  200 steps. That is the cut that keeps this file to a few minutes on two cores: the
  interpreter costs ~10-25 ms a step, and 112 combinations x 200 steps would take ~8 min.
  FUSED_STEPS is past RAdam's switch to the rectified branch (step 6) and past ASGD's
  t0 = 50 (averaging runs from step 52), so every branch runs in the kernel.

Compared: the parameters and every state tensor (torch's keys, e.g. ASGD's average `ax`,
NAdam's `mu_product`, the 0-d float32 `step`), with torch.testing.assert_close's float32
defaults. The number of bit-identical elements is reported per spec and path at the end.
The foreach path is compared with torch's foreach path, except where the registry says
why torch's own two paths disagree (ASGD: Entry.foreach_against_loop)."""
from __future__ import annotations

from collections import defaultdict

import pytest
import torch

from optdsl.registry import REGISTRY
from optdsl.verify import run_pair, with_state

STEPS = 200
FUSED_STEPS = 60

WAVE2 = [e for e in REGISTRY.values() if e.wave == 2]
EXPECTED = {"Adagrad", "RMSprop", "Adadelta", "Adamax", "NAdam", "RAdam", "Rprop", "ASGD"}
# The loop path mirrors torch.optim's for-loop op for op: bit-identical, every spec. The foreach
# path is bit-identical to torch's foreach path where torch's foreach does the loop's arithmetic
# (NAdam's and RAdam's foreach paths regroup it: within tolerance only), and ASGD's to torch's loop.
BIT_IDENTICAL = {("loop", n) for n in EXPECTED} | {
    ("foreach", n) for n in ("Adagrad", "RMSprop", "Adadelta", "Adamax", "Rprop", "ASGD")}

# (spec, path) -> [identical, total, runs]
_TALLY: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])


def _cases():
    for entry in WAVE2:
        combos = entry.combos()
        for i, combo in enumerate(combos):
            label = " ".join(f"{k}={v}" for k, v in combo.items())
            for path in ("loop", "foreach"):
                yield pytest.param(entry.name, combo, path, STEPS, id=f"{entry.name}-{path}-{label}")
            steps = STEPS if i == len(combos) - 1 else FUSED_STEPS
            yield pytest.param(entry.name, combo, "fused", steps, id=f"{entry.name}-fused{steps}-{label}")


def test_registry_has_every_wave2_spec_with_a_modest_grid_covering_every_hyper_and_flag():
    assert {e.name for e in WAVE2} == EXPECTED
    for e in WAVE2:
        combos = e.combos()
        assert 0 < len(combos) <= 16, e.name
        for key, values in e.grid.items():   # every level of every grid entry runs
            assert {repr(c[key]) for c in combos} == {repr(v) for v in values}, (e.name, key)
        assert e.torch_class is not None and e.reference_foreach and e.bench


# One invalid value per check torch.optim makes in __init__: the messages must be torch's, word for word.
INVALID = {
    "Adagrad": [{"lr": -1.0}, {"lr_decay": -0.5}, {"weight_decay": -1e-3}, {"initial_accumulator_value": -1.0},
                {"eps": -1e-9}],
    "RMSprop": [{"lr": -1.0}, {"eps": -1.0}, {"momentum": -0.1}, {"weight_decay": -1.0}, {"alpha": -0.5}],
    "Adadelta": [{"lr": -1.0}, {"rho": 1.5}, {"rho": -0.1}, {"eps": -1.0}, {"weight_decay": -1.0}],
    "Adamax": [{"lr": -1.0}, {"eps": -1.0}, {"betas": (1.0, 0.9)}, {"betas": (0.9, -0.1)}, {"weight_decay": -1.0}],
    "NAdam": [{"lr": -1.0}, {"eps": -1.0}, {"betas": (-0.1, 0.9)}, {"betas": (0.9, 1.0)}, {"weight_decay": -1.0},
              {"momentum_decay": -1e-3}],
    "RAdam": [{"lr": -1.0}, {"eps": -1.0}, {"betas": (1.5, 0.9)}, {"betas": (0.9, 1.5)}, {"weight_decay": -1.0}],
    "Rprop": [{"lr": -1.0}, {"etas": (1.5, 1.2)}, {"etas": (0.5, 0.9)}, {"etas": (0.0, 2.0)}],
    "ASGD": [{"lr": -1.0}, {"weight_decay": -1.0}],
}


@pytest.mark.parametrize("name, kwargs", [(n, kw) for n, cases in INVALID.items() for kw in cases],
                         ids=lambda x: x if isinstance(x, str) else "-".join(map(str, x.items())))
def test_init_rejects_invalid_hypers_in_torchs_words(name, kwargs):
    from optdsl import optim
    p = [torch.zeros(3, requires_grad=True)]
    with pytest.raises(ValueError) as theirs:
        REGISTRY[name].torch_class(p, **kwargs)
    with pytest.raises(ValueError) as ours:
        getattr(optim, name)(p, **kwargs)
    assert str(ours.value) == str(theirs.value)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_hyper_defaults_and_state_names_are_torchs(name):
    import inspect

    from optdsl import optim
    cls, ref = getattr(optim, name), REGISTRY[name].torch_class
    ours = inspect.signature(cls).parameters
    theirs = inspect.signature(ref).parameters
    shared = [k for k in ours if k in theirs and k != "params"]
    assert {k for k in theirs if k not in ("params", "foreach", "capturable", "differentiable", "fused")} <= set(ours)
    for k in shared:
        assert ours[k].default == theirs[k].default, k
    # the same state keys after one step
    p, q = torch.randn(4, requires_grad=True), torch.randn(4, requires_grad=True)
    p.grad, q.grad = torch.ones(4), torch.ones(4)
    a, b = cls([p]), ref([q])
    a.step()
    b.step()
    assert set(a.state[p]) == set(b.state[q])


@pytest.mark.parametrize("name, combo, path, steps", list(_cases()))
def test_matches_torch(name, combo, path, steps):
    entry = REGISTRY[name]
    ours, theirs, opt_a, opt_b = run_pair(entry, combo, path, steps)
    xs, ys = with_state(ours, theirs, opt_a, opt_b, check_keys=True)   # raises on other keys, shapes, dtypes
    for p in ours:
        step = opt_a.state[p].get("step")
        if step is not None:
            assert step.dim() == 0 and step.dtype == torch.float32 and float(step) == steps
    same = total = 0
    for x, y in zip(xs, ys):
        torch.testing.assert_close(x.detach(), y.detach())
        same += int((x.detach() == y.detach()).sum())
        total += x.numel()
    if (path, name) in BIT_IDENTICAL:
        assert same == total, f"{total - same} of {total} elements differ from torch in their last bits"
    tally = _TALLY[(name, path)]
    tally[0] += same
    tally[1] += total
    tally[2] += 1


@pytest.fixture(scope="module", autouse=True)
def _report(request):
    yield
    if not _TALLY:
        return
    lines = ["", "wave 2: bit-identical elements (parameters and state) against torch.optim"]
    for (name, path), (same, total, runs) in sorted(_TALLY.items()):
        entry = REGISTRY[name]
        against = entry.reference_label(path) + (" foreach" if entry.reference_path(path) else "")
        lines.append(f"  {name:<9} {path:<8} vs {against:<32} {runs:>3} runs  {same:>7}/{total:<7} "
                     f"({100.0 * same / max(total, 1):5.1f}%)")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        print("\n".join(lines))
        return
    with capture.global_and_fixture_disabled():   # shown without -s too
        reporter.write_line("\n".join(lines))

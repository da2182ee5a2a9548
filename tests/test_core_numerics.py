"""Wave 1 (SGD, Adam, AdamW, Lion): every generated path against its reference over
200 steps, for every flag combination in the registry, within assert_close's
float32 defaults. Each case reports how many elements are bit-identical."""
import pytest
import torch

from optdsl.registry import REGISTRY
from optdsl.verify import compare, run_pair

WAVE1 = ("SGD", "Adam", "AdamW", "Lion")
STEPS = 200
CASES = [(name, combo, path) for name in WAVE1 for combo in REGISTRY[name].combos()
         for path in ("loop", "foreach", "fused")]


def _id(case):
    name, combo, path = case
    return f"{name}-{path}-" + "-".join(f"{k}={v}" for k, v in combo.items())


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_matches_reference_over_200_steps(case, record_property):
    name, combo, path = case
    entry = REGISTRY[name]
    ours, theirs, opt, ref = run_pair(entry, combo, path, STEPS)
    max_abs, max_rel, identical, total, ok = compare(ours, theirs)
    record_property("bit_identical", f"{identical}/{total}")
    print(f"{_id(case)}: {identical}/{total} elements bit-identical, max abs err {max_abs:.3e}")
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b)
    # the state torch keeps must match too (same keys, same values)
    for p_ours, p_ref in zip(ours, theirs):
        s_ours, s_ref = opt.state[p_ours], ref.state[p_ref]
        for key, value in s_ref.items():
            assert key in s_ours, f"state key {key!r} missing"
            torch.testing.assert_close(s_ours[key], value)
    if path in ("loop", "foreach") and name != "Lion":
        # same ops in the same order as torch.optim: bit-identical
        assert identical == total


def test_bit_identical_summary(capsys):
    """Counts printed per path for the closing note: loop and foreach match torch exactly."""
    rows = []
    for name in WAVE1:
        entry = REGISTRY[name]
        combo = entry.combos()[-1]
        for path in ("loop", "foreach", "fused"):
            ours, theirs, _, _ = run_pair(entry, combo, path, STEPS)
            _, _, identical, total, ok = compare(ours, theirs)
            assert ok
            rows.append((name, path, identical, total))
    for row in rows:
        print("%-6s %-8s %d/%d bit-identical" % row)
    assert all(i == t for n, p, i, t in rows if p != "fused")

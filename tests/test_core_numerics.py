"""Wave 1 (SGD, Adam, AdamW, Lion): every generated path against its reference, for every
flag combination in the registry, within assert_close's float32 defaults: loop and foreach
over 200 steps (bit-identical to torch), fused over 50 (its Triton kernel runs in the
interpreter here, a few ms per program; `optdsl verify --full` runs it for 200). Each case
prints how many elements are bit-identical."""
import pytest
import torch

from optdsl.registry import REGISTRY
from optdsl.verify import compare, run_pair

WAVE1 = ("SGD", "Adam", "AdamW", "Lion")
STEPS = {"loop": 200, "foreach": 200, "fused": 50}
CASES = [(name, combo, path) for name in WAVE1 for combo in REGISTRY[name].combos()
         for path in ("loop", "foreach", "fused")]


def _id(case):
    name, combo, path = case
    return f"{name}-{path}-" + "-".join(f"{k}={v}" for k, v in combo.items())


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_matches_reference(case, record_property):
    name, combo, path = case
    entry = REGISTRY[name]
    ours, theirs, opt, ref = run_pair(entry, combo, path, STEPS[path])
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

"""The quick `optdsl verify` plan (what `make verify` runs) covers every registry spec, every path
and every level of every hyper and flag on each path; `--full` is the whole grid."""
from __future__ import annotations

from optdsl.registry import REGISTRY
from optdsl.verify import FULL_STEPS, SHAPES, covering_combos, full_plan, quick_plan

PATHS = ("loop", "foreach", "fused")


def test_quick_plan_covers_every_spec_path_and_flag_level():
    tasks = quick_plan(list(REGISTRY.values()), PATHS)
    for entry in REGISTRY.values():
        for path in filter(entry.supports, PATHS):   # (a spec without a fused path has no fused runs)
            runs = [t for t in tasks if t.entry is entry and t.path == path]
            assert runs, (entry.name, path)
            for key, levels in entry.grid.items():
                seen = {repr(t.combo[key]) for t in runs}
                assert seen == {repr(v) for v in levels}, (entry.name, path, key)
            assert all(entry.valid(t.combo) for t in runs)
    # fewer runs than the full grid, and the comparators of each path
    assert len(tasks) < len(full_plan(list(REGISTRY.values()), PATHS, FULL_STEPS)) / 3
    assert {t.againsts for t in tasks if t.path == "fused"} == {("reference", "loop")}
    assert not [t for t in tasks if not t.entry.supports(t.path)]


def test_quick_plan_steps_reach_every_level_that_acts_late():
    # ASGD's t0=50 level starts averaging after step 51
    assert all(t.steps > 51 for t in quick_plan([REGISTRY["ASGD"]], PATHS))


def test_full_plan_is_the_whole_grid():
    entry = REGISTRY["Adam"]
    tasks = full_plan([entry], PATHS, FULL_STEPS)
    assert [t.combo for t in tasks[::3]] == entry.combos()
    assert {(t.steps, t.shapes) for t in tasks} == {(200, SHAPES)}


def test_covering_combos_is_deterministic_and_starts_at_the_first_levels():
    for entry in REGISTRY.values():
        combos = covering_combos(entry)
        assert combos == covering_combos(entry)
        assert combos[0] == entry.combos()[0]

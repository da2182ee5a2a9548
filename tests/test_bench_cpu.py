"""`optdsl bench --cpu-fused --smoke`: the CPU benchmark's whole table at tiny sizes, so that its
code cannot rot between the (slow, noisy) real runs. Only the table's shape is checked: every
contender's row is there, with finite numbers or a reason it was skipped; never a time.

~2-4 s without torch.compile, ~10-14 s more for one cold inductor compile of Adam (2 shared cores)."""
import importlib.util
import math

from optdsl import bench_cpu

COMPILED = "torch.compile (inductor, tensor lr)"
TAIL = ["optdsl foreach", "optdsl fused (C++)", "4R/3W stream (C++, ceiling)", "copy_ (ceiling)"]
FUSED_TORCH = ["torch foreach", "torch fused=True", COMPILED]
DEEPSPEED = ["DeepSpeedCPUAdam"]
LABELS = {"Adam": ["torch foreach", "torch fused=True", *DEEPSPEED, COMPILED, *TAIL],
          "AdamW": ["torch foreach", "torch fused=True", *DEEPSPEED, COMPILED, *TAIL],
          "SGD": [*FUSED_TORCH, *TAIL], "Adagrad": [*FUSED_TORCH, *TAIL], "RAdam": [*FUSED_TORCH, *TAIL],
          "Lion": ["lion_pytorch (loop)", COMPILED, *TAIL]}
NUMBERS = 4   # ms/step, ratio, GB/s, % of 4R/3W


def rows(out: str) -> dict:
    """{(spec, mix): {label: the rest of its row}} from the printed table."""
    table, spec = {}, None
    mixes = tuple(bench_cpu.SMOKE_MIXES)
    for line in out.splitlines():
        head = line.split(" (")[0]
        if head in bench_cpu.SPECS:
            spec = head
        for mix in mixes:
            # a row: the mix padded to 13 columns, a space, the label (a compile-time line indents it)
            if line.startswith(mix + " ") and len(line) > 14 and line[14] != " ":
                rest = line[14:]
                label = next((lab for lab in sorted(LABELS[spec], key=len, reverse=True) if rest.startswith(lab)), None)
                assert label is not None, line
                table.setdefault((spec, mix), {})[label] = rest[len(label):].strip()
    return table


def numbers(rest: str) -> list[float]:
    return [float(x.rstrip("%")) for x in rest.split()]


def test_smoke_every_spec_every_contender(capsys):
    assert bench_cpu.main([], repeat=1, rounds=2, large=False, compile_=False, smoke=True) == 0
    out = capsys.readouterr().out
    table = rows(out)
    assert {s for s, _ in table} == set(bench_cpu.SPECS)
    for (spec, mix), got in table.items():
        assert list(got) == LABELS[spec], (spec, mix)
        for label, rest in got.items():
            if label == COMPILED:
                assert rest == "skipped (--no-compile)"
            elif label == "torch fused=True" and spec == "RAdam":
                assert rest == "none: torch has no fused RAdam"
            elif label == "DeepSpeedCPUAdam" and importlib.util.find_spec("deepspeed") is None:
                assert rest == "skipped: deepspeed not installed (optional bench extra)"
            else:
                values = numbers(rest)
                assert len(values) == NUMBERS and all(math.isfinite(v) and v >= 0 for v in values), (spec, mix, label, rest)
        assert numbers(got[LABELS[spec][0]])[1] == 1.0   # the ratios' baseline is the first contender
    assert "ratio = lion_pytorch (loop) time / this time" in out
    assert "SGD (lr=0.01, momentum=0.9): 20 B per element" in out   # the momentum buffer is counted


def test_smoke_compiled_adam_on_one_mix(capsys):
    assert bench_cpu.main(["Adam"], repeat=1, rounds=2, large=False, compile_max_tensors=1, smoke=True) == 0
    out = capsys.readouterr().out
    table = rows(out)
    one, *others = bench_cpu.SMOKE_MIXES
    values = numbers(table[("Adam", one)][COMPILED])
    assert len(values) == NUMBERS and all(math.isfinite(v) and v >= 0 for v in values)
    assert f"{one:<13}   {COMPILED}: compile (first call) " in out
    for mix in others:
        assert table[("Adam", mix)][COMPILED].startswith("skipped (") and "> limit 1" in table[("Adam", mix)][COMPILED]

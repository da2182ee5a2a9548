"""optdsl.convergence: the three problems are deterministic, training really lowers the loss,
`optdsl compare` prints one row per optimizer and writes the PNG, the plot is reproducible."""
from __future__ import annotations

import math

import pytest
import torch

from optdsl import convergence
from optdsl.cli import main as cli_main

SPEC = """optimizer TinySGD
hyper lr = 1e-3 where lr >= 0
update {
  param = param - lr * grad
}
"""


@pytest.mark.parametrize("problem", convergence.PROBLEMS)
def test_problems_are_deterministic_bit_for_bit(problem):
    from optdsl.optim import Adam
    a = convergence.train(Adam, problem, steps=15)
    b = convergence.train(Adam, problem, steps=15)
    assert a.losses == b.losses
    assert len(a.losses) == 16 and all(math.isfinite(v) for v in a.losses)
    assert a.lr == pytest.approx(1e-3 * convergence.LR_SCALE[problem])


def test_adamw_lowers_the_digits_loss():
    curve = convergence.train(torch.optim.AdamW, "digits", steps=60)
    assert curve.losses[0] > 2.0                       # about log(10) at the start: 10 classes
    assert curve.final < 0.5 * curve.losses[0]
    assert curve.steps_to(curve.losses[0] / 2) is not None


def test_generated_sgd_follows_torch_sgd_on_lstsq():
    """The curves come from real runs: the generated SGD and torch's agree to rounding."""
    from optdsl.optim import SGD
    ours = convergence.train(SGD, "lstsq", steps=40)
    theirs = convergence.train(torch.optim.SGD, "lstsq", steps=40)
    assert ours.final < ours.losses[0]
    assert ours.losses == pytest.approx(theirs.losses, rel=1e-5)


def test_resolve_names():
    assert convergence.resolve("adam")[0] == "Adam (optdsl)"
    assert convergence.resolve("funnelled_sgdm")[0] == "FunnelledSGDM (optdsl)"
    assert convergence.resolve("AdamW")[0] == "AdamW (optdsl)"            # the shipped spec first
    label, cls = convergence.resolve("torch.optim.AdamW")
    assert (label, cls) == ("AdamW (torch)", torch.optim.AdamW)
    assert convergence.resolve("Adagrad")[0] == "Adagrad (optdsl)"
    assert convergence.resolve("SparseAdam")[0] == "SparseAdam (optdsl)"   # shipped since specs/sparse_adam.opt
    assert convergence.resolve("torch.optim.SparseAdam")[1] is torch.optim.SparseAdam
    with pytest.raises(ValueError, match="unknown optimizer 'Nope'"):
        convergence.resolve("Nope")


def test_compare_prints_one_row_per_optimizer_and_writes_the_png(tmp_path, capsys):
    spec = tmp_path / "tiny.opt"
    spec.write_text(SPEC)
    out = tmp_path / "cmp.png"
    rc = cli_main(["compare", str(spec), "torch.optim.AdamW", "SGD", "--problem", "lstsq", "--steps", "30",
                   "--out", str(out), "--target", "0.25"])
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[:3] == ["optimizer", "lr", "final"]
    rows = lines[2:]
    assert [r.split("  ")[0].strip() for r in rows] == ["TinySGD (tiny.opt)", "AdamW (torch)", "SGD (optdsl)"]
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the user's spec is plain SGD: its row equals the shipped SGD's (same default lr, same rule)
    assert rows[0].split()[-3:] == rows[2].split()[-3:]


def test_compare_rejects_an_unknown_name(capsys):
    assert cli_main(["compare", "NoSuchOptimizer", "--steps", "2"]) == 2
    assert "unknown optimizer 'NoSuchOptimizer'" in capsys.readouterr().err


def test_plot_is_reproducible_and_has_no_dates(tmp_path):
    curves = {p: [convergence.train(torch.optim.SGD, p, steps=10, label="SGD")] for p in convergence.PROBLEMS}
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    convergence.plot(curves, a, "t")
    convergence.plot(curves, b, "t")
    assert a.read_bytes() == b.read_bytes()
    assert b"tIME" not in a.read_bytes() and b"Software" not in a.read_bytes()


def test_write_convergence_plot(tmp_path):
    png = tmp_path / "adam.png"
    finals = convergence.write_convergence_plot("Adam", png)
    assert set(finals) == set(convergence.PROBLEMS)
    for losses in finals.values():
        assert set(losses) == {"Adam (optdsl)", "AdamW (torch)", "SGD (torch)"}
    assert finals["digits"]["Adam (optdsl)"] < 0.1
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

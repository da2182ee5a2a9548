"""`optdsl docs`: the committed pages are fresh (`--check`, text only), staleness is caught, the
plot hook is called per spec and never changes the text, and a page says what the class does."""
import shutil
from pathlib import Path

import pytest

from optdsl.cli import main
from optdsl.docgen.pages import default_dir, render_page, write_docs

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "optimizers"


def test_committed_pages_are_fresh(capsys):
    assert default_dir() == DOCS
    assert main(["docs", "--check"]) == 0, capsys.readouterr().err


def test_check_catches_stale_missing_and_extra_pages_and_ignores_pngs(tmp_path):
    out = tmp_path / "optimizers"
    shutil.copytree(DOCS, out)
    (out / "adam.png").write_bytes(b"not a png")   # PNGs are never compared
    assert write_docs(out, check=True) == []
    (out / "adam.md").write_text((out / "adam.md").read_text().replace("28 B/element", "27 B/element"))
    (out / "sgd.md").unlink()
    (out / "gone.md").write_text("an optimizer no spec describes")
    assert sorted(write_docs(out, check=True)) == ["adam.md", "gone.md", "sgd.md"]
    assert main(["docs", "--check", "--out", str(out)]) == 1
    # writing fixes all three, atomically, and leaves the PNG alone
    assert sorted(write_docs(out)) == ["adam.md", "gone.md", "sgd.md"]
    assert write_docs(out, check=True) == [] and not (out / "gone.md").exists()
    assert (out / "adam.png").read_bytes() == b"not a png"
    assert not list(out.glob(".*.tmp"))


def test_plot_hook_is_called_per_spec_and_never_changes_the_text(tmp_path):
    calls = []

    def plot(class_name, png_path):
        calls.append((class_name, png_path))
        return {"digits": 0.1}

    write_docs(tmp_path, plot=plot, names=["adam", "funnelled_sgdm"])
    assert calls == [("Adam", tmp_path / "adam.png"), ("FunnelledSGDM", tmp_path / "funnelled_sgdm.png")]
    assert (tmp_path / "adam.md").read_text() == (DOCS / "adam.md").read_text()
    assert not (tmp_path / "index.md").exists()   # a subset leaves the index alone
    # without a hook: the page still links its PNG, and none is written
    bare = tmp_path / "bare"
    write_docs(bare, names=["adam"])
    assert "](adam.png)" in (bare / "adam.md").read_text() and not list(bare.glob("*.png"))


def test_adam_page():
    page = render_page(ROOT / "specs" / "adam.opt")
    text = page.text
    assert page.class_name == "Adam" and page.stem == "adam"
    assert "```math\n\\begin{aligned}" in text and r"{\beta_{1}}^{t}" in text
    assert "| `lr` | `0.001` | `lr >= 0` | `ValueError: Invalid learning rate: <lr>` |" in text
    assert "`ValueError: Invalid beta parameter at index 1: <betas[1]>`" in text
    assert "| `max_exp_avg_sq` | like the parameter | zeros | `amsgrad` | `max_exp_avg_sq` |" in text
    assert "28 B/element" in text and "36 B/element" in text
    assert "**Reference:** `torch.optim.Adam`" in text
    assert "**Paper:** Adam: A Method for Stochastic Optimization (Kingma & Ba, 2015)" in text
    assert "![Adam against AdamW and SGD" in text and "(adam.png)" in text
    assert (ROOT / "specs" / "adam.opt").read_text().rstrip("\n") in text


def test_state_dict_keys_and_require_messages():
    adagrad = render_page(ROOT / "specs" / "adagrad.opt").text
    assert "| `state_sum` |" in adagrad and "| `sum` |" in adagrad    # key "sum"
    rprop = render_page(ROOT / "specs" / "rprop.opt").text
    assert "`ValueError: Invalid eta values: <etas[0]>, <etas[1]>`" in rprop


@pytest.mark.parametrize("cls,kwargs,message", [
    ("Adam", {"lr": -1.0}, "Invalid learning rate: <lr>"),
    ("Adam", {"betas": (0.9, 1.5)}, "Invalid beta parameter at index 1: <betas[1]>"),
    ("Rprop", {"etas": (2.0, 1.2)}, "Invalid eta values: <etas[0]>, <etas[1]>"),
    ("Lamb", {"eps": -1.0}, "Invalid epsilon: <eps>"),
])
def test_documented_errors_are_what_the_constructor_raises(cls, kwargs, message):
    import torch
    from optdsl import optim
    stem = {"Adam": "adam", "Rprop": "rprop", "Lamb": "lamb"}[cls]
    assert f"ValueError: {message}" in render_page(ROOT / "specs" / f"{stem}.opt").text
    with pytest.raises(ValueError) as raised:
        getattr(optim, cls)([torch.zeros(2, requires_grad=True)], **kwargs)
    expected = message
    for name, value in kwargs.items():
        if isinstance(value, tuple):
            for i, v in enumerate(value):
                expected = expected.replace(f"<{name}[{i}]>", str(v))
        expected = expected.replace(f"<{name}>", str(value))
    assert str(raised.value) == expected


def test_index_links_every_page():
    index = (DOCS / "index.md").read_text()
    for spec in sorted((ROOT / "specs").glob("*.opt")):
        assert f"]({spec.stem}.md)" in index
        assert (DOCS / f"{spec.stem}.md").exists()
    assert "| [Adam](adam.md) |" in index and "| 28 (36) | 1 |" in index


def test_one_page_regenerated_in_full_with_its_training_matches_the_committed_one(tmp_path):
    """The whole pipeline for one spec, plots included: the convergence runs train the generated
    class for real; the page text must equal the committed page (the PNG bytes are not compared,
    only that a PNG was written with the losses of three problems)."""
    from optdsl.convergence import write_convergence_plot
    losses = {}

    def plot(name, png):
        losses[name] = write_convergence_plot(name, png)

    write_docs(tmp_path, plot=plot, names=["adam"])
    assert (tmp_path / "adam.md").read_text() == (default_dir() / "adam.md").read_text()
    assert (tmp_path / "adam.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(losses["Adam"]) == {"digits", "rosenbrock", "lstsq"}

"""`optdsl docs`: one Markdown page per shipped spec (docs/optimizers/<spec>.md) and an index.

Each page is generated, never written by hand: the update rule as LaTeX rendered from the IR,
the hypers (default, constraint, the ValueError the constructor raises), the flags, the state
(with its state_dict keys), the fused path's cost report, the reference it is verified against
and the paper (the spec's doc line), the spec itself, and a link to its convergence plot
`<spec>.png`. The page text never depends on the plot (the plot hook writes only the PNG), so
`optdsl docs --check` compares text without training anything."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .. import ast
from ..build import atomic_write, spec_files
from ..compiler import spec_hash
from ..lower import _conjuncts
from ..parse import parse
from ..compose import expand
from ..resources import data_dir
from ..show.math import latex_rule
from ..plan import fused_refusal
from ..show.report import KIND_WORDS, CostReport, cost_markdown, cost_report, flops_convention, kinds, state_lines
from ..show.spec import Stages, compile_stages

# plot(class_name, png_path) -> final losses: trains the class against AdamW and SGD and writes the PNG
PlotHook = Callable[[str, Path], object]


def default_dir() -> Path:
    return data_dir("docs") / "optimizers"


def _source_of(node: ast.Node, source: str) -> str:
    """The spec text a node spans (its `where` clause, its condition)."""
    lines = source.split("\n")
    s = node.span
    if s.line == s.end_line:
        return lines[s.line - 1][s.col - 1:s.end_col - 1]
    parts = [lines[s.line - 1][s.col - 1:]] + lines[s.line:s.end_line - 1] + [lines[s.end_line - 1][:s.end_col - 1]]
    return " ".join(p.strip() for p in parts)


def _message(template: str, shown: str | None = None) -> str:
    """A check's message as the constructor raises it, the offending value as `<name>`."""
    if shown is not None:
        return template.replace("{}", f"<{shown}>")
    text = re.sub(r"(?<!\{)\{([a-z][a-z0-9_]*(?:\[\d+\])?)\}(?!\})", r"<\1>", template)
    return text.replace("{{", "{").replace("}}", "}")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _code(text: str) -> str:
    return f"`{_cell(text)}`" if text else ""


def _number(x) -> str:
    if x is None:
        return "none"
    if isinstance(x, tuple):
        return "(" + ", ".join(_number(v) for v in x) + ")"
    if isinstance(x, str):   # a choice
        return f'"{x}"'
    return repr(x) if isinstance(x, int) else repr(float(x))


def _modes(p) -> list[str]:
    """`on train` / `on eval` (docs/language.md, Modes): what optimizer.train() and .eval() do."""
    if not p.modes:
        return []
    out = ["## Train and eval modes", "",
           "`optimizer.train()` and `optimizer.eval()` run these on each tensor that has state, in each "
           "param group whose mode changes (`param_groups[i][\"train_mode\"]`); `step()` raises in eval "
           "mode. A new optimizer starts in train mode.", ""]
    for mode, _ in p.modes:
        out += [f"`on {mode}`:", "", "```math", latex_rule(p.mode_program(mode)), "```", ""]
    return out


def _sparse(how: str) -> list[str]:
    """The page's line on sparse gradients, where the spec takes them (`sparse rows`)."""
    if not how:
        return []
    dense = "a dense one is an error" if how == "rows only" else "a dense one updates the whole tensor"
    return [f"- **Sparse gradients** (`sparse {how}`): a sparse gradient updates only the rows it touches, gathered "
            f"(its repeated rows summed), updated and scattered back on every path, the fused kernel's bytes per "
            f"element counted per touched element; {dense}"]


def paper(doc: str) -> str:
    """The paper a spec's doc line names: the line up to `, as <reference>`."""
    return doc.split(", as ", 1)[0]


@dataclass(frozen=True)
class Page:
    stem: str          # the spec file's stem: the page is <stem>.md, its plot <stem>.png
    class_name: str
    doc: str
    report: CostReport | None   # None: no fused path (fused_refusal)
    text: str


def hyper_rows(spec: ast.Spec, stages: Stages) -> list[list[str]]:
    """One row per check (a `where` clause split at `and`) and one per hyper without any."""
    rows = []
    infos = {h.name: h for h in stages.program.hypers}
    for h in spec.hypers:
        info = infos[h.name]
        default = _number(h.default) + (" or none" if h.optional and h.default is not None else "")
        conjuncts = _conjuncts(h.where) if h.where is not None else []
        if h.choices:
            rows.append([_code(h.name), _code(default), "one of " + ", ".join(_code(_number(c)) for c in h.choices),
                         _code("ValueError: " + _message(h.choice_message)) if h.choice_message else ""])
            continue
        if not conjuncts:
            rows.append([_code(h.name), _code(default), "", ""])
            continue
        for j, (c, (_, template, (name, index))) in enumerate(zip(conjuncts, info.checks)):
            shown = name if index is None else f"{name}[{index}]"
            rows.append([_code(h.name) if j == 0 else "", _code(default) if j == 0 else "",
                         _code(_source_of(c, spec.source)), _code("ValueError: " + _message(template, shown))])
    for r in spec.requires:
        rows.append(["(require)", "", _code(_source_of(r.cond, spec.source)), _code("ValueError: " + _message(r.message))])
    return rows


def state_rows(spec: ast.Spec, stages: Stages) -> list[list[str]]:
    rows = []
    infos = {s.name: s for s in stages.program.states}
    for s in spec.states:
        if s.shape == "group":
            rows.append([_code(s.name), "one number per param group (float64)", _number(s.init),
                         "always, in the param group", _code(f'param_groups[i]["{s.name}"]')])
            continue
        info = infos[s.name]
        shape = {"scalar": "one number per tensor (0-d float32)",
                 "row": "one number per row: the parameter's shape, its last dim 1",
                 "column": "one number per column: the parameter's shape, its second-to-last dim 1"}.get(
            s.shape, "like the parameter")
        where = "on the parameter's device" if info.kind.on_device and s.shape == "scalar" else ""
        init = {"zeros": "zeros", "empty": "empty (absent until first stored)"}.get(str(s.init), _number(s.init)
                                                                                  if not isinstance(s.init, str)
                                                                                  else f"the hyper {s.init}")
        kept = _code(_source_of(s.cond, spec.source)) if s.cond is not None else "always"
        rows.append([_code(s.name), shape + (f", {where}" if where else ""), init, kept, _code(info.storage_key)])
    if stages.program.uses_step:
        saved = " (saved as an int)" if stages.program.step_as_int else ""
        rows.append([_code("step"), "one number per tensor (0-d float32)" + saved, "0, incremented before the update",
                     "always", _code("step")])
    return rows


def _table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(out)


def _reference(class_name: str) -> list[str]:
    from ..registry import REGISTRY
    entry = REGISTRY.get(class_name)
    if entry is None:
        return ["- **Reference:** none registered"]
    paths = ", ".join(p for p in ("loop", "foreach", "fused") if entry.supports(p))
    out = [f"- **Reference:** `{entry.reference_name}`: `optdsl verify {class_name}` checks the "
           f"{paths.replace(', fused', ' and fused') if entry.supports('fused') else paths.replace(', ', ' and ')} "
           "paths against it, step for step, over its flag and hyper grid"]
    if entry.torch_class is not None:
        name = entry.reference_name if entry.torch_class is entry.reference else entry.torch_class.__qualname__
        out.append(f"- **state_dict:** interchangeable with `{name}`'s")
    if entry.foreach_against_loop:
        out.append(f"- **Note:** {entry.foreach_against_loop}")
    return out


def render_page(path: Path) -> Page:
    """The page of the spec at `path`."""
    written = path.read_text(encoding="utf-8")
    source, _ = expand(written, path.name, path.parent)   # a composition: the spec it composes
    spec = parse(source, path.name)
    stages = compile_stages(source, path.name)
    p = stages.program
    refused = fused_refusal(p)
    report = None if refused else cost_report(p)
    by_kind: dict = {}
    for row in kinds(stages.math):
        by_kind.setdefault(row.kind, []).append(f"`{row.name}`")
    out = [
        f"<!-- Generated by `optdsl docs` from specs/{path.name} (sha256 {spec_hash(written)[:16]}); "
        "do not edit: run `optdsl docs`. -->",
        f"# {p.name}",
        "",
        f"> {p.doc}" if p.doc else "> (no description)",
        "",
        f"- **Class:** `optdsl.optim.{p.name}`",
        f"- **Paper:** {paper(p.doc)}" if p.doc else "- **Paper:** not named in the spec",
        *_reference(p.name),
        *_sparse(p.sparse),
        "",
        "## Update rule",
        "",
        "Rendered from the compiled IR (`optdsl show " + path.stem + " --latex`). θ is the parameter, g the "
        "gradient, t the step (counted per tensor, from 1); a tuple hyper is indexed from 1 (β₁ is `betas[0]`).",
        "",
        "```math",
        latex_rule(stages.math),
        "```",
        "",
        _table(["kind", "computed", "values"],
               [[KIND_WORDS[k][0], KIND_WORDS[k][1], ", ".join(names)] for k, names in sorted(by_kind.items())]),
        "",
        *_modes(stages.math),
        "## Convergence",
        "",
        f"![{p.name} against AdamW and SGD on the digits MLP, Rosenbrock and ill-conditioned least squares]"
        f"({path.stem}.png)",
        "",
        "## Hyperparameters",
        "",
        _table(["hyper", "default", "constraint", "error"], hyper_rows(spec, stages)),
        "",
    ]
    if spec.flags:
        out += ["## Flags", "", _table(["flag", "default"],
                                       [[_code(f.name), _code("true" if f.default else "false")] for f in spec.flags]), ""]
    out += [
        "## State",
        "",
        _table(["state", "shape", "initial value", "kept", "state_dict key"], state_rows(spec, stages)) if spec.states
        or p.uses_step else "No state.",
        "",
        *(_cost(report, path.stem) if report is not None else _no_fused(refused, p)),
        "## Spec",
        "",
        f"[specs/{path.name}](../../specs/{path.name})",
        "",
        "```opt",
        written.rstrip("\n"),
        "```",
        "",
    ]
    if source is not written:
        out += ["It composes this spec (`optdsl compose` prints it):", "", "```opt", source.rstrip("\n"), "```", ""]
    return Page(path.stem, p.name, p.doc, report, "\n".join(out))


def _cost(report: CostReport, stem: str) -> list[str]:
    return ["## Cost per step (fused path)", "",
            "Per parameter element, from the plan (`optdsl show " + stem + "`); numbers in parentheses: with every "
            "optional state.", "", cost_markdown(report), "",
            f"FLOPs per element count each elementwise operation: {flops_convention()}.", ""]


def _no_fused(why: str, p) -> list[str]:
    return ["## Fused path", "", f"`fused=True` is refused: {why}.", "",
            *[f"- {line}" for line in state_lines(p)], ""]


def render_index(pages: list[Page]) -> str:
    rows = []
    for page in pages:
        report = page.report
        if report is None:   # no fused path
            rows.append([f"[{page.class_name}]({page.stem}.md)", _cell(page.doc), "no fused path", "—"])
            continue
        total = f"{report.total}" + (f" ({report.total_full})" if report.total_full != report.total else "")
        rows.append([f"[{page.class_name}]({page.stem}.md)", _cell(page.doc), total, str(report.launches)])
    return "\n".join([
        "<!-- Generated by `optdsl docs`; do not edit: run `optdsl docs`. -->",
        "# Shipped optimizers",
        "",
        "One page per spec in `specs/`: the update rule rendered from the IR, hypers, state, the fused path's "
        "cost and a convergence plot against AdamW and SGD. Bytes per element: fp32, one step of the fused path "
        "(in parentheses: with every optional state).",
        "",
        _table(["optimizer", "description", "bytes / element", "launches / step"], rows),
        "",
    ])


def render_all(specs: list[Path] | None = None) -> dict[str, str]:
    """Page file name -> text, the index included."""
    pages = [render_page(path) for path in (specs or spec_files())]
    out = {f"{page.stem}.md": page.text for page in pages}
    out["index.md"] = render_index(pages)
    return out


def write_docs(out_dir: Path | None = None, plot: PlotHook | None = None, check: bool = False,
               names: list[str] | None = None) -> list[str]:
    """Write docs/optimizers/ (or, with `check`, only compare): returns the stale page names.

    `plot(class_name, png_path)`, where given, is called once per spec (a `names` filter: spec
    stems) to write `<spec>.png` beside its page; its return value is not used (the page text
    never depends on it). Without it, pages still link `<spec>.png` and no PNG is written.
    PNGs are never compared."""
    out_dir = out_dir or default_dir()
    specs = [p for p in spec_files() if names is None or p.stem in names]
    wanted = render_all(specs)
    if names is not None:
        wanted.pop("index.md")
    stale = []
    for name, text in wanted.items():
        path = out_dir / name
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current != text:
            stale.append(name)
            if not check:
                atomic_write(path, text)
    if names is None:
        for path in sorted(out_dir.glob("*.md")):
            if path.name not in wanted:
                stale.append(path.name)
                if not check:
                    path.unlink()
    if plot is not None and not check:
        for spec in specs:
            class_name = parse(expand(spec.read_text(encoding="utf-8"), spec.name, spec.parent)[0], spec.name).name
            plot(class_name, out_dir / f"{spec.stem}.png")
    return stale

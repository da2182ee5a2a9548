"""`optdsl show`: the math renderer (every Op), kinds, the cost report (28 B/element for fp32 Adam,
36 with amsgrad, the same figures as the kernel docstrings), the command, and the .opt lexer."""
import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from pygments.token import Error, Token

from optdsl.builtins import FUNCTIONS, REDUCTION_FUNCTIONS
from optdsl.cli import main
from optdsl.compiler import compile_ir
from optdsl.ir import ARITY, LEAF, REDUCE, Kind, Op, Type, Value, apply, const, reduce, walk_values
from optdsl.plan import make_plan
from optdsl.plan.cost import FLOPS, phase_costs
from optdsl.show.lexer import OptLexer
from optdsl.show.math import RULES, latex_rule, natural_symbol, render_value, unicode_rule
from optdsl.show.report import cost_report, kinds
from optdsl.show.spec import compile_stages

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.opt"))
TOY = compile_ir('optimizer Toy\nhyper lr = 0.1\nhyper betas = (0.9, 0.99)\nflag f = false\nstate m = zeros\n'
                 'update { m = m + grad\n param = param - lr * m }', "toy.opt")


def program(name: str):
    return compile_ir((ROOT / "specs" / f"{name}.opt").read_text(), f"{name}.opt")


# ---- the math renderer -------------------------------------------------------------------------

def _leaf(op: Op) -> Value:
    return {
        Op.CONST: const(0.5), Op.HYPER: Value(Op.HYPER, (), ("betas", 0), Kind.HOST),
        Op.FLAG: Value(Op.FLAG, (), "f", Kind.HOST, Type.BOOL), Op.STATE: Value(Op.STATE, (), "m", Kind.TENSOR),
        Op.VAR: Value(Op.VAR, (), "tmp", Kind.TENSOR), Op.IS_EMPTY: Value(Op.IS_EMPTY, (), "m", Kind.TENSOR_SCALAR, Type.BOOL),
        Op.IS_SET: Value(Op.IS_SET, (), "lr", Kind.HOST, Type.BOOL), Op.SIZE: Value(Op.SIZE, (), 1, Kind.TENSOR_SCALAR),
        Op.CHOICE: Value(Op.CHOICE, (), ("mode", "a_b"), Kind.HOST, Type.BOOL),
    }.get(op, Value(op, (), None, Kind.TENSOR if op in (Op.PARAM, Op.GRAD) else Kind.TENSOR_SCALAR))


OPERANDS = (Value(Op.STATE, (), "m", Kind.TENSOR), Value(Op.GRAD, (), None, Kind.TENSOR),
            Value(Op.HYPER, (), ("lr", None), Kind.HOST))


def sample(op: Op) -> Value:
    if op in LEAF:
        return _leaf(op)
    args = OPERANDS[:ARITY[op]]
    if op is Op.WHERE:
        args = (apply(Op.GT, args[0], const(0.0)),) + args[1:]
    return reduce(op, "group", *args) if op in REDUCE else apply(op, *args)


def test_every_op_has_a_rendering_in_both_dialects():
    assert set(RULES) == set(Op), f"ops without a rendering: {set(Op) - set(RULES)}"
    for op in Op:
        v = sample(op)
        for latex in (False, True):
            text = render_value(v, TOY, latex=latex)
            assert text.strip(), (op, latex)
            # operands are shown (m, g for grad, the lr hyper)
            for a in v.args:
                if a.op is Op.STATE:
                    assert "m" in text, (op, text)
                if a.op is Op.HYPER:
                    assert "lr" in text, (op, text)


@pytest.mark.parametrize("op,unicode,latex", [
    (Op.SQRT, "√m", r"\sqrt{m}"), (Op.POW, "m^g", "{m}^{g}"), (Op.ABS, "|m|", r"\left\lvert m \right\rvert"),
    (Op.LERP, "m + lr · (g − m)", r"m + \mathrm{lr} \cdot \left(g - m\right)"),
    (Op.MAX, "max(m, g)", r"\max\left(m, g\right)"), (Op.CLAMP, "clamp(m, g, lr)", None),
    (Op.NORM, "‖m‖_group", r"\left\lVert m \right\rVert_{\mathrm{group}}"),
    (Op.WHERE, "(g if m > 0 else lr)", r"\begin{cases} g & \text{if } m > 0 \\ \mathrm{lr} & \text{otherwise} \end{cases}"),
    (Op.DIV, "m / g", r"\frac{m}{g}"), (Op.RSQRT, "1 / √m", r"\frac{1}{\sqrt{m}}"),
])
def test_renderings(op, unicode, latex):
    v = sample(op)
    assert render_value(v, TOY) == unicode
    if latex is not None:
        assert render_value(v, TOY, latex=True) == latex


def test_precedence_parenthesises_only_where_needed():
    m, g = OPERANDS[0], OPERANDS[1]
    assert render_value(apply(Op.MUL, apply(Op.ADD, m, g), g), TOY) == "(m + g) · g"
    assert render_value(apply(Op.ADD, apply(Op.MUL, m, g), g), TOY) == "m · g + g"
    assert render_value(apply(Op.SUB, m, apply(Op.SUB, g, m)), TOY) == "m − (g − m)"
    assert render_value(apply(Op.MUL, m, apply(Op.NEG, g)), TOY) == "m · (−g)"
    assert render_value(apply(Op.POW, apply(Op.ADD, m, g), const(2.0)), TOY) == "(m + g)^2"
    assert render_value(const(1e-8), TOY) == "10⁻⁸" and render_value(const(1e-8), TOY, latex=True) == "10^{-8}"


def test_greek_names_by_a_general_rule():
    assert natural_symbol("betas", 0).latex() == r"\beta_{1}"
    assert natural_symbol("betas", 1).unicode() == "β₂"
    assert natural_symbol("etas", 0).unicode() == "η₁"
    assert natural_symbol("step_sizes", 0).latex() == r"\mathrm{step\_sizes}_{1}"
    assert natural_symbol("eps").latex() == r"\varepsilon"
    assert natural_symbol("lambd").unicode() == "λ"
    assert natural_symbol("gamma_p").unicode() == "γ_p"
    assert natural_symbol("beta3").latex() == r"\beta_{3}"
    assert natural_symbol("weight_decay").latex() == r"\mathrm{weight\_decay}"
    assert natural_symbol("betamax").latex() == r"\mathrm{betamax}"   # not a Greek name plus digits


def test_clashing_names_are_written_out():
    # Adam's local `g` would look like the gradient: the gradient is then written `grad`
    text = unicode_rule(program("adam"))
    assert "(−grad if maximize else grad)" in text
    lion = unicode_rule(program("lion"))
    assert "g" in lion and "θ" in lion


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_every_shipped_spec_renders(path):
    stages = compile_stages(path.read_text(), path.name)
    text, latex = unicode_rule(stages.math), latex_rule(stages.math)
    assert "←" in text and r"\leftarrow" in latex
    assert latex.count("{") == latex.count("}"), latex
    assert latex.count(r"\begin{") == latex.count(r"\end{")
    assert len(re.findall(r"\\left(?![a-z])", latex)) == len(re.findall(r"\\right(?![a-z])", latex))


def test_adam_math_reads_like_the_paper():
    text = unicode_rule(compile_stages((ROOT / "specs/adam.opt").read_text(), "adam.opt").math)
    assert "exp_avg_sq ← β₂ · exp_avg_sq + (1 − β₂) · g · g" in text
    assert "bias_correction1 ← 1 − β₁^t" in text
    assert "denom ← √v / √bias_correction2 + ε" in text


# ---- kinds and cost --------------------------------------------------------------------------

def test_kinds_of_adam():
    rows = {r.name: r.kind for r in kinds(compile_stages((ROOT / "specs/adam.opt").read_text(), "adam.opt").math)}
    assert rows["lr"] is Kind.HOST and rows["amsgrad"] is Kind.HOST
    assert rows["step"] is Kind.TENSOR_SCALAR and rows["bias_correction1"] is Kind.TENSOR_SCALAR
    assert rows["exp_avg"] is Kind.TENSOR and rows["denom"] is Kind.TENSOR
    lamb = {r.name: r.kind for r in kinds(compile_stages((ROOT / "specs/adamp.opt").read_text(), "adamp.opt").math)}
    assert lamb["cos_c"] is Kind.CHANNEL


def test_adam_moves_28_bytes_per_element_and_36_with_amsgrad():
    p = program("adam")
    report = cost_report(p)
    assert (report.total, report.total_full) == (28, 36)
    assert (report.state_bytes.read, report.state_bytes.read_full) == (8, 12)
    assert report.launches == 1
    assert dict(((f, v), n) for f, v, n in report.by_flag) == {("amsgrad", False): 28, ("amsgrad", True): 36}
    assert cost_report(p, {"amsgrad": True}).total == 36
    assert cost_report(p, {"amsgrad": False}).total_full == 28
    assert cost_report(p, dtype="bf16").total == 14
    assert cost_report(p, dtype={"exp_avg": "bf16", "exp_avg_sq": "bf16"}).total == 20
    with pytest.raises(ValueError, match="no flag 'nope'"):
        cost_report(p, {"nope": True})


def test_lamb_reads_its_streams_in_three_phases():
    report = cost_report(program("lamb"))
    assert report.launches == 3 and report.combines == 2
    assert [b.total for _, b in report.phases] == [8, 16, 28]
    assert report.phases[0][0].computes == ("norm per group", "norm")


def _docstring_totals(text: str) -> tuple[int, int]:
    doc = text.split('"""')[1]
    body = doc[doc.index("Bytes moved per element"):]
    if "total " in body:
        m = re.search(r"total (\d+) B(?: \((\d+) B with every optional state\))?", body)
    else:
        m = re.search(r": (\d+) B \(.*?\)(?:; (\d+) B with every optional state)?", body)
    return int(m.group(1)), int(m.group(2) or m.group(1))


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_cost_report_agrees_with_the_kernel_docstring(path):
    """The committed generated/<name>_triton.py states the bytes its launches move: the report
    computes them from the plan with the same function."""
    p = compile_ir(path.read_text(), path.name)
    from optdsl.names import module_name
    from optdsl.plan import fused_refusal
    if fused_refusal(p):   # no kernel module: the report's fused path is refused too
        assert not (ROOT / "generated" / f"{module_name(p.name)}_triton.py").exists()
        return
    kernel = (ROOT / "generated" / f"{module_name(p.name)}_triton.py").read_text()
    report = cost_report(p)
    assert _docstring_totals(kernel) == (report.total, report.total_full)


def test_flops_count_elementwise_ops_once():
    toy = compile_ir("optimizer T\nhyper lr = 0.1\nhyper eps = 1e-8\n"
                     "update { param = param - lr * grad / (sqrt(grad * grad) + eps) }", "t.opt")
    (cost,) = phase_costs(make_plan(toy, "fused"))
    assert cost.flops == 6    # mul, div, sqrt, mul, add, sub
    assert set(FLOPS) == set(Op)


# ---- the command ----------------------------------------------------------------------------------

def test_show_adam(capsys):
    assert main(["show", "adam"]) == 0
    out = capsys.readouterr().out
    assert "\x1b[" not in out    # not a terminal: plain text
    assert "28 B/element" in out and "36 B/element" in out
    assert "β₁" in out and "←" in out
    for word in ("host", "per tensor", "elementwise", "kernel launches per step: 1"):
        assert word in out, word
    assert "optimizer Adam" in out   # the spec itself


def test_show_with_a_flag_set(capsys):
    assert main(["show", "adam", "--flag", "amsgrad=true"]) == 0
    out = capsys.readouterr().out
    assert "bytes moved per element: 36 B/element" in out
    assert "max_exp_avg_sq if amsgrad" not in out   # the math is specialised too


def test_show_views(capsys):
    assert main(["show", "sgd", "--latex"]) == 0
    assert capsys.readouterr().out.startswith(r"\begin{aligned}")
    assert main(["show", "lamb", "--ir"]) == 0
    out = capsys.readouterr().out
    for stage in ("== lower ==", "== fold_constants ==", "== name_reductions ==", "== plan (fused: hoist_host) =="):
        assert stage in out
    assert main(["show", "adam", "--code", "loop"]) == 0
    assert capsys.readouterr().out.startswith("def _single_tensor_adam(")
    assert main(["show", "adam", "--code", "foreach"]) == 0
    assert "def _multi_tensor_adam(" in capsys.readouterr().out
    assert main(["show", "adam", "--code", "fused"]) == 0
    assert "@triton.jit" in capsys.readouterr().out


def test_show_a_file_and_its_errors(tmp_path, capsys):
    good = tmp_path / "toy.opt"
    good.write_text("optimizer Toy\nhyper lr = 0.5\nupdate { param = param - lr * grad }\n")
    assert main(["show", str(good), "--no-color"]) == 0
    assert "12 B/element" in capsys.readouterr().out    # reads param, grad; writes param
    bad = tmp_path / "bad.opt"
    bad.write_text("optimizer X\nhyper lr = 1\nupdate {\n param = param - lr * foo\n}\n")
    assert main(["show", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:4:23: error: unknown name 'foo'" in err and "^~~" in err
    assert main(["show", "no_such_optimizer"]) == 1
    assert "no shipped spec" in capsys.readouterr().err
    assert main(["show", "adam", "--flag", "amsgrad=maybe"]) == 1
    assert "--flag takes NAME=true" in capsys.readouterr().err
    assert main(["show", "adam", "--dtype", "param=bf16,grad"]) == 1
    assert "STREAM=DTYPE" in capsys.readouterr().err
    assert main(["show", "adam", "--dtype", "fp8"]) == 1
    assert "unknown dtype 'fp8'" in capsys.readouterr().err
    assert main(["show", "adam", "--dtype", "param=bf16,grad=bf16"]) == 0
    assert "bytes moved per element: 22 B/element (param bf16, grad bf16, exp_avg fp32" in capsys.readouterr().out


# ---- the lexer -----------------------------------------------------------------------------------

@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_every_shipped_spec_lexes_without_errors(path):
    text = path.read_text()
    tokens = list(OptLexer().get_tokens(text))
    assert not [t for t in tokens if t[0] in Error], [t for t in tokens if t[0] in Error][:5]
    assert "".join(v for _, v in tokens) == text if text.endswith("\n") else text + "\n"


def test_lexer_token_classes():
    text = ('optimizer Toy "doc"  # a comment\nhyper lr = 1e-3 where lr >= 0\nstate m : scalar = zeros if f\n'
            'update { m = sqrt(norm(grad, group)) ? 1 : none\n param = param - lr * step }')
    tokens = {(v, t) for t, v in OptLexer().get_tokens(text)}
    for value, kind in [("optimizer", Token.Keyword.Declaration), ("Toy", Token.Name.Class),
                        ('"doc"', Token.Literal.String.Double), ("# a comment", Token.Comment.Single),
                        ("hyper", Token.Keyword.Declaration), ("lr", Token.Name.Variable),
                        ("1e-3", Token.Literal.Number.Float), ("where", Token.Keyword), (">=", Token.Operator),
                        ("zeros", Token.Keyword.Pseudo), ("sqrt", Token.Name.Builtin), ("norm", Token.Name.Builtin),
                        ("group", Token.Name.Builtin.Pseudo), ("grad", Token.Name.Builtin.Pseudo),
                        ("none", Token.Keyword.Constant), ("step", Token.Name.Builtin.Pseudo)]:
        assert (value, kind) in tokens, (value, kind)


def test_lexer_knows_every_builtin():
    for name in (*FUNCTIONS, *REDUCTION_FUNCTIONS):
        kinds_ = [t for t, v in OptLexer().get_tokens(f"x = {name}(a, b)") if v == name]
        assert kinds_ == [Token.Name.Builtin], name


def test_pyproject_registers_the_lexer_entry_point():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["entry-points"]["pygments.lexers"]["opt"] == "optdsl.show.lexer:OptLexer"
    assert "optdsl.show" in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]


def test_installed_entry_point_finds_the_lexer():
    """Live only once optdsl is (re)installed from a tree that declares it (tests/test_wheel.py
    checks it in a fresh install either way)."""
    eps = [ep for ep in importlib.metadata.entry_points(group="pygments.lexers") if ep.name == "opt"]
    if not eps:
        pytest.skip("the installed optdsl predates the entry point")
    from pygments.lexers import get_lexer_by_name
    assert type(get_lexer_by_name("opt")).__name__ == "OptLexer"


# ---- random programs: every rendering and report works on what the fuzzer writes ------------------

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402

from optdsl.diagnostics import CompileError  # noqa: E402
from optdsl.fuzz.programs import cases  # noqa: E402


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
          phases=(Phase.explicit, Phase.reuse, Phase.generate))
@given(cases())
def test_random_programs_render_and_cost(case):
    from optdsl.compiler import compile_spec
    try:
        compile_spec(case.text, "fz.opt")
    except CompileError:
        return    # a construct the plan refuses (positioned diagnostic): nothing to show
    stages = compile_stages(case.text, "fz.opt")
    latex = latex_rule(stages.math)
    assert latex.count("{") == latex.count("}")
    assert unicode_rule(stages.math) is not None and kinds(stages.math)
    report = cost_report(stages.program)
    assert report.total <= report.total_full and report.launches == len(make_plan(stages.program, "fused").phases.phases)
    # with every flag fixed, a stream stays optional only under a condition on hypers
    fixed = cost_report(stages.program, {f.name: True for f in stages.program.flags})
    conds = {s.name: s.cond for s in stages.program.states}
    for name in fixed.optional:
        assert not any(n.op is Op.FLAG for n in walk_values(conds[name])), name


def test_a_select_between_equal_values_is_that_value():
    m = OPERANDS[0]
    same = apply(Op.WHERE, apply(Op.EQ, m, m), m, m)   # passes.fold_constants' broadcast
    assert render_value(same, TOY) == "m" and render_value(same, TOY, latex=True) == "m"
    g = OPERANDS[1]
    chain = apply(Op.WHERE, apply(Op.GT, m, const(0.0)), g, same)
    assert render_value(chain, TOY) == "(g if m > 0 else m)"


def test_a_reader_that_stops_early_ends_the_command_quietly():
    # `optdsl show adam --code fused | head -1`: the pipe closes before the listing is written
    read_end, write_end = os.pipe()
    os.close(read_end)
    run = subprocess.run([sys.executable, "-m", "optdsl", "show", "adam", "--code", "fused"],
                         stdout=write_end, stderr=subprocess.PIPE, text=True)
    os.close(write_end)
    assert run.returncode == 141 and "Traceback" not in run.stderr, run.stderr

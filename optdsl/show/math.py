"""The update rule as math, rendered from the IR (never written by hand per spec): Unicode for a
terminal, LaTeX for the generated docs and `optdsl show --latex`.

Names: `param` is θ, `grad` g, `step` t. A name whose first part is a Greek letter's (`beta`,
`gamma_p`, `beta3`; also torch's `eps` and `lambd`) is that letter, the rest a subscript (γ_p,
β₃); a tuple hyper is indexed from 1 as papers write it, so `betas[0]` is β₁ when `beta` is Greek,
else `step_sizes₁`. Two names that would look the same (a local `g` beside `grad`) are both
written out in full instead. Every Op of the closed enum has a rule in `RULES`
(tests/test_show.py checks it); `lerp(a, b, w)` and `rsqrt(x)` are written as their formulas."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ..ir import REDUCE, If, Let, Op, Program, Stmt, Store, Value, apply, const, walk_stmts

GREEK = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau "
         "upsilon phi chi psi omega").split()
_GREEK_UNICODE = dict(zip(GREEK, "αβγδεζηθικλμνξοπρστυφχψω"))
_GREEK_LATEX = {g: ("o" if g == "omicron" else "\\" + g) for g in GREEK}
_GREEK_LATEX["epsilon"] = "\\varepsilon"
# torch's spellings of Greek names (`lambda` is a Python keyword)
GREEK_ALIASES = {"eps": "epsilon", "lambd": "lambda"}
_SUBSCRIPT_DIGITS = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")
_SUPERSCRIPT = str.maketrans("0123456789-+", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻⁺")

# binding strength of a rendered expression (higher binds tighter)
OR, AND, NOT, CMP, ADD, MUL, POW, ATOM = 1, 2, 3, 4, 5, 6, 8, 9


def greek(word: str) -> str | None:
    word = GREEK_ALIASES.get(word, word)
    return word if word in _GREEK_UNICODE else None


@dataclass(frozen=True)
class Symbol:
    """How one name (or one element of a tuple hyper) is written."""
    base: str          # a Greek letter's name, or the name itself
    subscript: tuple[str, ...]
    is_greek: bool

    def unicode(self) -> str:
        head = _GREEK_UNICODE[self.base] if self.is_greek else self.base
        return head + "".join(_unicode_subscript(s) for s in self.subscript)

    def latex(self) -> str:
        if self.is_greek:
            head = _GREEK_LATEX[self.base]
        elif len(self.base) == 1:
            head = self.base
        else:
            head = "\\mathrm{" + _latex_text(self.base) + "}"
        if not self.subscript:
            return head
        sub = ",".join(s if s.isdigit() or len(s) == 1 else "\\mathrm{" + _latex_text(s) + "}" for s in self.subscript)
        return f"{head}_{{{sub}}}"


def _unicode_subscript(s: str) -> str:
    return s.translate(_SUBSCRIPT_DIGITS) if s.isdigit() else "_" + s


def _latex_text(s: str) -> str:
    return s.replace("_", "\\_")


def natural_symbol(name: str, index: int | None = None) -> Symbol:
    """The symbol a name gets by the Greek rule (see the module docstring)."""
    if index is not None:
        word = name[:-1] if name.endswith("s") and greek(name[:-1]) else name
        if greek(word):
            return Symbol(greek(word), (str(index + 1),), True)
        return Symbol(name, (str(index + 1),), False)
    head, *rest = name.split("_")
    m = re.fullmatch(r"([a-z]+?)(\d*)", head)
    if m and greek(m.group(1)) and all(rest):
        return Symbol(greek(m.group(1)), tuple(x for x in (m.group(2), *rest) if x), True)
    return Symbol(name, (), False)


def plain_symbol(name: str, index: int | None = None) -> Symbol:
    return Symbol(name, () if index is None else (str(index + 1),), False)


INPUT_SYMBOLS = {Op.PARAM: ("param", Symbol("theta", (), True)), Op.GRAD: ("grad", Symbol("g", (), False)),
                 Op.STEP: ("step", Symbol("t", (), False))}


def symbol_table(p: Program) -> dict[tuple[str, int | None], Symbol]:
    """(name, tuple index) -> symbol for every name the program reads or binds, with clashes
    (two names that would look the same) written out in full."""
    keys: set[tuple[str, int | None]] = {(name, None) for name, _ in INPUT_SYMBOLS.values()}
    keys |= {(h.name, None) for h in p.hypers if h.arity == 0}
    keys |= {(h.name, i) for h in p.hypers for i in range(h.arity)}
    keys |= {(f.name, None) for f in p.flags} | {(s.name, None) for s in p.states}
    keys |= {(s.name, None) for s in walk_stmts(p.body) if isinstance(s, Let)}
    inputs = {name: sym for name, sym in INPUT_SYMBOLS.values()}
    chosen = {k: inputs[k[0]] if k[1] is None and k[0] in inputs else natural_symbol(*k) for k in sorted(keys, key=str)}
    looks: dict[str, list] = {}
    for k, sym in chosen.items():
        looks.setdefault(sym.unicode(), []).append(k)
    for clash in (ks for ks in looks.values() if len(ks) > 1):
        for k in clash:
            chosen[k] = plain_symbol(*k)
    return chosen


class Renderer:
    """Shared by both dialects: each rule returns (text, binding strength)."""
    latex = False

    def __init__(self, p: Program):
        self.symbols = symbol_table(p)

    # ---- dialect-specific pieces, overridden by LatexRenderer ---------------------------------
    def sym(self, name: str, index: int | None = None) -> str:
        sym = self.symbols.get((name, index)) or natural_symbol(name, index)
        return sym.latex() if self.latex else sym.unicode()

    def word(self, w: str) -> str:
        return w

    def func(self, name: str, args: list[str], sub: str = "") -> str:
        return f"{name}{'_' + sub if sub else ''}({', '.join(args)})"

    def number(self, x: float) -> str:
        if x == math.inf:
            return "∞"
        if x != x:
            return "NaN"
        mantissa, exponent = _split(x)
        if exponent is None:
            return mantissa
        power = "10" + str(exponent).translate(_SUPERSCRIPT)
        return power if mantissa == "1" else f"{mantissa}·{power}"

    def paren(self, s: str) -> str:
        return f"({s})"

    # ---- rendering -------------------------------------------------------------------------------
    def expr(self, v: Value) -> str:
        return self.value(v)[0]

    def at(self, v: Value, strength: int) -> str:
        text, own = self.value(v)
        return text if own >= strength else self.paren(text)

    def value(self, v: Value) -> tuple[str, int]:
        return RULES[v.op](self, v)

    def binary(self, v: Value, sym: str, strength: int, left: int, right: int) -> tuple[str, int]:
        return f"{self.at(v.args[0], left)} {sym} {self.at(v.args[1], right)}", strength

    def cases(self, v: Value) -> tuple[str, int]:
        arms, node = [], v
        while node.op is Op.WHERE and node.args[1] != node.args[2]:
            arms.append((node.args[1], node.args[0]))
            node = node.args[2]
        if not arms:   # where(c, x, x) is x (a broadcast)
            return self.value(node.args[1])
        parts = [f"{self.at(a, CMP)} if {self.expr(c)}" for a, c in arms]
        return "(" + " else ".join(parts) + f" else {self.at(node, CMP)})", ATOM


class LatexRenderer(Renderer):
    latex = True

    def word(self, w: str) -> str:
        return "\\mathrm{" + _latex_text(w) + "}"

    def func(self, name: str, args: list[str], sub: str = "") -> str:
        head = f"\\operatorname{{{_latex_text(name)}}}"
        if name in ("exp", "log", "min", "max", "tanh"):
            head = "\\" + name
        if sub:
            head += f"_{{\\mathrm{{{sub}}}}}"
        return f"{head}\\left({', '.join(args)}\\right)"

    def number(self, x: float) -> str:
        if x == math.inf:
            return "\\infty"
        if x != x:
            return "\\mathrm{NaN}"
        mantissa, exponent = _split(x)
        if exponent is None:
            return mantissa
        return f"10^{{{exponent}}}" if mantissa == "1" else f"{mantissa} \\cdot 10^{{{exponent}}}"

    def paren(self, s: str) -> str:
        return f"\\left({s}\\right)"

    def cases(self, v: Value) -> tuple[str, int]:
        arms, node = [], v
        while node.op is Op.WHERE and node.args[1] != node.args[2]:
            arms.append((node.args[1], node.args[0]))
            node = node.args[2]
        if not arms:
            return self.value(node.args[1])
        rows = [f"{self.expr(a)} & \\text{{if }} {self.expr(c)}" for a, c in arms]
        rows.append(f"{self.expr(node)} & \\text{{otherwise}}")
        return "\\begin{cases} " + " \\\\ ".join(rows) + " \\end{cases}", ATOM


def _split(x: float) -> tuple[str, int | None]:
    """`x` as (mantissa text, power of ten or None): 1e-08 -> ("1", -8), 0.9 -> ("0.9", None)."""
    if x == int(x) and abs(x) < 1e15:
        return str(int(x)), None
    text = repr(float(x))
    if "e" not in text:
        return text, None
    mantissa, exponent = text.split("e")
    return mantissa, int(exponent)


# ---- one rule per Op ---------------------------------------------------------------------------

def _const(r: Renderer, v: Value):
    if isinstance(v.arg, bool):
        return r.word("true" if v.arg else "false"), ATOM
    x = float(v.arg)
    text = r.number(abs(x))
    return ("−" if not r.latex else "-") + text if x < 0 or (x == 0 and math.copysign(1, x) < 0) else text, \
        (ADD if x < 0 else ATOM)


def _leaf_name(r: Renderer, v: Value):
    return r.sym(str(v.arg)), ATOM


def _hyper(r: Renderer, v: Value):
    name, index = v.arg  # type: ignore[misc]
    return r.sym(name, index), ATOM


def _input(r: Renderer, v: Value):
    return r.sym(INPUT_SYMBOLS[v.op][0]), ATOM


def _shape(r: Renderer, v: Value):
    if v.op is Op.SIZE:
        return r.func("size", [str(int(v.arg))]), ATOM
    return r.word(v.op.name.lower()), ATOM


def _is_empty(r: Renderer, v: Value):
    return r.func("is_empty", [r.sym(str(v.arg))]), ATOM


def _is_set(r: Renderer, v: Value):
    ne = "\\neq" if r.latex else "≠"
    ref = r.sym(*v.arg) if isinstance(v.arg, tuple) else r.sym(str(v.arg))   # a tuple entry `none` by default
    return f"{ref} {ne} {r.word('none')}", CMP


def _choice(r: Renderer, v: Value):
    name, value = v.arg
    escaped = value.replace("\\", "\\textbackslash{}").replace("_", "\\_").replace("{", "\\{").replace("}", "\\}")
    text = "\\text{``" + escaped + "''}" if r.latex else f'"{value}"'
    return f"{r.sym(name)} = {text}", CMP


def _neg(r: Renderer, v: Value):
    return ("-" if r.latex else "−") + r.at(v.args[0], MUL), ADD


def _not(r: Renderer, v: Value):
    return ("\\lnot " if r.latex else "¬") + r.at(v.args[0], ATOM), NOT


def _sqrt(r: Renderer, v: Value):
    if r.latex:
        return f"\\sqrt{{{r.expr(v.args[0])}}}", ATOM
    return "√" + r.at(v.args[0], ATOM), ATOM


def _abs(r: Renderer, v: Value):
    inner = r.expr(v.args[0])
    return (f"\\left\\lvert {inner} \\right\\rvert" if r.latex else f"|{inner}|"), ATOM


def _call(name: str):
    def rule(r: Renderer, v: Value):
        return r.func(name, [r.expr(a) for a in v.args]), ATOM
    return rule


def _transparent(r: Renderer, v: Value):   # a copy, a host value moved to the device: the same number
    return r.value(v.args[0])


def _reduction(r: Renderer, v: Value):
    scope = "" if v.arg == "tensor" else str(v.arg)
    args = [r.expr(a) for a in v.args]
    if v.op is Op.NORM:
        text = f"\\left\\lVert {args[0]} \\right\\rVert" if r.latex else f"‖{args[0]}‖"
        return text + (f"_{{\\mathrm{{{scope}}}}}" if r.latex else f"_{scope}") * bool(scope), ATOM
    if v.op is Op.DOT:
        text = f"\\left\\langle {args[0]}, {args[1]} \\right\\rangle" if r.latex else f"⟨{args[0]}, {args[1]}⟩"
        return text + (f"_{{\\mathrm{{{scope}}}}}" if r.latex else f"_{scope}") * bool(scope), ATOM
    name = {Op.SUM: "sum", Op.MEAN: "mean", Op.RMS: "rms", Op.AMAX: "amax"}[v.op]
    return r.func(name, args, scope), ATOM


def _add(r, v):
    return r.binary(v, "+", ADD, ADD, MUL)


def _sub(r, v):
    return r.binary(v, "-" if r.latex else "−", ADD, ADD, MUL)


def _mul(r, v):
    return r.binary(v, "\\cdot" if r.latex else "·", MUL, MUL, POW)


def _div(r, v):
    if r.latex:
        return f"\\frac{{{r.expr(v.args[0])}}}{{{r.expr(v.args[1])}}}", ATOM
    return r.binary(v, "/", MUL, MUL, POW)


def _pow(r, v):
    base = r.at(v.args[0], ATOM)
    if r.latex:
        return f"{{{base}}}^{{{r.expr(v.args[1])}}}", POW
    return f"{base}^{r.at(v.args[1], ATOM)}", POW


def _compare(latex: str, unicode: str):
    def rule(r: Renderer, v: Value):
        return r.binary(v, latex if r.latex else unicode, CMP, ADD, ADD)
    return rule


def _logic(latex: str, unicode: str, strength: int):
    def rule(r: Renderer, v: Value):
        return r.binary(v, latex if r.latex else unicode, strength, strength, strength + 1)
    return rule


def _where(r: Renderer, v: Value):
    return r.cases(v)


def _lerp(r: Renderer, v: Value):
    start, end, weight = v.args
    return r.value(apply(Op.ADD, start, apply(Op.MUL, weight, apply(Op.SUB, end, start))))


def _rsqrt(r: Renderer, v: Value):
    return r.value(apply(Op.DIV, const(1.0), apply(Op.SQRT, v.args[0])))


RULES = {
    Op.CONST: _const, Op.HYPER: _hyper, Op.FLAG: _leaf_name, Op.STATE: _leaf_name, Op.VAR: _leaf_name,
    Op.STEP: _input, Op.PARAM: _input, Op.GRAD: _input,
    Op.IS_EMPTY: _is_empty, Op.IS_SET: _is_set, Op.CHOICE: _choice,
    Op.NEWTON_SCHULZ: _call("newton_schulz"),
    Op.COVER_MIN: _call("cover_min"),
    Op.NUMEL: _shape, Op.NDIM: _shape, Op.CHANNEL_NUMEL: _shape, Op.SIZE: _shape, Op.DTYPE_EPS: _shape,
    Op.NEG: _neg, Op.NOT: _not, Op.SQRT: _sqrt, Op.RSQRT: _rsqrt, Op.ABS: _abs,
    Op.SIGN: _call("sign"), Op.EXP: _call("exp"), Op.LOG: _call("log"),
    Op.SIGMOID: _call("sigmoid"), Op.TANH: _call("tanh"), Op.SOFTPLUS: _call("softplus"),
    Op.LOG1P: _call("log1p"), Op.EXPM1: _call("expm1"), Op.CBRT: _call("cbrt"), Op.FLOOR: _call("floor"),
    Op.MOD: _call("mod"),
    Op.COPY: _transparent, Op.ON_DEVICE: _transparent, Op.ITEM: _transparent,
    **{op: _reduction for op in REDUCE},
    Op.ADD: _add, Op.SUB: _sub, Op.MUL: _mul, Op.DIV: _div, Op.POW: _pow,
    Op.MIN: _call("min"), Op.MAX: _call("max"),
    Op.LT: _compare("<", "<"), Op.LE: _compare("\\leq", "≤"), Op.GT: _compare(">", ">"),
    Op.GE: _compare("\\geq", "≥"), Op.EQ: _compare("=", "="), Op.NE: _compare("\\neq", "≠"),
    Op.AND: _logic("\\land", "∧", AND), Op.OR: _logic("\\lor", "∨", OR),
    Op.WHERE: _where, Op.LERP: _lerp, Op.CLAMP: _call("clamp"),
}


# ---- statements ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Line:
    depth: int
    text: str
    target: str | None = None    # the name a line assigns (its kind is shown beside it)
    value: Value | None = None


def lines(p: Program, latex: bool = False) -> list[Line]:
    """The update, one assignment or `if` per line, nested by depth."""
    r = (LatexRenderer if latex else Renderer)(p)
    arrow = "\\leftarrow" if latex else "←"
    out: list[Line] = []

    colon = "\\text{:}" if latex else ":"

    def keyword(w: str) -> str:
        return f"\\textbf{{{w}}}\\;" if latex else w

    def block(stmts: tuple[Stmt, ...], depth: int) -> None:
        for s in stmts:
            if isinstance(s, (Let, Store)):
                name = "param" if isinstance(s, Store) and s.target == "param" else (
                    s.target if isinstance(s, Store) else s.name)
                out.append(Line(depth, f"{r.sym(name)} {arrow} {r.expr(s.value)}", name, s.value))
            else:
                if_chain(s, depth, "if")

    def if_chain(s: If, depth: int, word: str) -> None:
        out.append(Line(depth, f"{keyword(word)} {r.expr(s.cond)}{colon}"))
        block(s.then, depth + 1)
        if len(s.other) == 1 and isinstance(s.other[0], If):
            if_chain(s.other[0], depth, "else if")
        elif s.other:
            out.append(Line(depth, (r"\textbf{else}" if latex else "else") + colon))
            block(s.other, depth + 1)
    # the group update first (once per group and step() call), then the tensors' update without
    # the Lets it repeats from there
    block(p.group_update, 0)
    repeated = {s for s in p.group_update if isinstance(s, Let)}   # by value: the passes rebuild them
    block(tuple(s for s in p.body if s not in repeated), 0)
    return out


def unicode_rule(p: Program) -> str:
    return "\n".join("    " * ln.depth + ln.text for ln in lines(p))


def latex_rule(p: Program) -> str:
    """An `aligned` block (amsmath; GitHub's and KaTeX's math render it)."""
    rows = ["& " + "\\quad " * ln.depth + ln.text for ln in lines(p, latex=True)]
    return "\\begin{aligned}\n" + " \\\\\n".join(rows) + "\n\\end{aligned}"


def render_value(v: Value, p: Program, latex: bool = False) -> str:
    """One value (tests render every Op through this)."""
    return (LatexRenderer if latex else Renderer)(p).expr(v)


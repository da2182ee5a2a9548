"""Generator coverage: over the programs it is shown, which grammar productions the parser
reduced, which terminals (and each alternative of `<=`-style terminals) it read, which builtins
were called and which IR ops were built, so a test can demand that everything in
grammars/optdsl.lark and builtins.py is generated."""
from __future__ import annotations

import re
from functools import lru_cache

from ..builtins import CONSTANTS, FUNCTIONS, INITIAL_LR, REDUCTION_FUNCTIONS, STATE_PREDICATES
from ..ir import SCOPES

def _alternatives(pattern: str) -> list[str] | None:
    """The literal alternatives of a terminal like `(?:<=|>=|==)` or `(true|false)(?!...)`, else None."""
    m = re.fullmatch(r"\((?:\?:)?(.*?)\)(\(\?!.*\))?", pattern)
    if not m:
        return None
    alts = m.group(1).split("|")
    out = []
    for a in alts:
        lit = re.sub(r"\\(.)", r"\1", a)
        if re.escape(lit).replace("\\", "") != lit.replace("\\", "") and re.search(r"(?<!\\)[.*+?\[\]{}()^$]", a):
            return None
        out.append(lit)
    return out


class Coverage:
    """What a stream of generated programs exercised, against what grammar and builtins offer."""

    # productions no well-typed program can reach, with the reason
    EXEMPT = {
        "atom: NAME LPAR RPAR": "a call with no arguments: no builtin takes none",
        # a fuzz case is one text, run without files: its wrapper is spliced in by
        # optdsl.compose.compose, the function `= wrapper(spec)` calls once it has read the files
        # (tests/test_compose.py parses and resolves every form)
        "start: header EQUAL composition": "a composition names spec files",
        "composition: spec_ref LPAR composition RPAR": "as `start: header EQUAL composition`",
        "composition: spec_ref": "as `start: header EQUAL composition`",
        "spec_ref: NAME": "as `start: header EQUAL composition`",
        "spec_ref: STRING": "as `start: header EQUAL composition`",
        # an `input` is estimated from the gradients' graph (loss.backward(create_graph=True)), and a
        # fuzz case's gradients are data (tests/test_adahessian.py runs a user's spec with one on
        # every path, and Adahessian against timm)
        "decl: input": "an input needs gradients with a graph",
        "input: INPUT NAME EQUAL NAME LPAR NAME __input_star_2 RPAR": "as `decl: input`",
        "input: INPUT NAME EQUAL NAME LPAR NAME RPAR": "as `decl: input`",
        "input: INPUT NAME EQUAL NAME LPAR RPAR": "as `decl: input`",
        # `keep step as int` changes what state_dict() saves, nothing a step computes: the fuzzer
        # compares steps (tests/test_sparse.py checks the saved int and a cross-load with torch's)
        "keep: KEEP NAME keep_as": "a state_dict convention, not a computation",
        "keep: KEEP NAME keep_per keep_as": "as `keep: KEEP NAME keep_as`",
        "keep_as: AS NAME": "as `keep: KEEP NAME keep_as`",
    }
    # What the fuzzer does not draw yet: item(), dtype_eps and tuple entries `none` by default
    # (tests/test_factored.py checks them against torch.optim.Adafactor and the interpreter).
    NOT_DRAWN_YET = {"builtin item()", "IR op ITEM", "IR op DTYPE_EPS", "grammar production `tuple_entry: NONE -> none_lit`",
                     # Muon's: newton_schulz() (2-D params, bfloat16 matmuls: open error bounds), choice
                     # hypers and the strings they compare with (tests/test_muon.py runs them on every path)
                     "builtin newton_schulz()", "IR op NEWTON_SCHULZ", "IR op CHOICE", "terminal VBAR ('|')",
                     "grammar production `hyper: HYPER NAME EQUAL choice_entry __hyper_plus_3 choice_message -> choice_hyper`",
                     "grammar production `hyper: HYPER NAME EQUAL choice_entry __hyper_plus_3 -> choice_hyper`",
                     "grammar production `choice_message: ELSE STRING`", "grammar production `choice_entry: STRING`",
                     "grammar production `choice_entry: NONE -> none_lit`", "grammar production `atom: STRING -> string_lit`"}
    EXEMPT_TERMINALS = {"INPUT": "as `decl: input`", "AS": "as `keep: KEEP NAME keep_as`"}

    def __init__(self):
        from lark import Lark
        from ..resources import data_path
        self.parser = Lark(data_path("grammars", "optdsl.lark").read_text(), parser="lalr",
                           propagate_positions=True, maybe_placeholders=False)
        self.productions: dict = {}
        self.tokens: set[str] = set()
        self.token_values: set[tuple[str, str]] = set()
        self.calls: set[str] = set()
        self.ops: set = set()
        self.scopes: dict[str, int] = {scope: 0 for scope in SCOPES}   # programs reducing over each scope
        self.comments = 0
        self.programs = 0
        callbacks = self.parser.parser.parser.parser_conf.callbacks
        for rule, cb in list(callbacks.items()):
            self.productions[rule] = 0
            callbacks[rule] = self._wrap(rule, cb)

    def _wrap(self, rule, cb):
        from lark import Token

        def wrapped(children):
            self.productions[rule] += 1
            for c in children:
                if isinstance(c, Token):
                    self.tokens.add(c.type)
                    self.token_values.add((c.type, str(c)))
            if rule.origin.name == "atom" and rule.alias == "call" and children and isinstance(children[0], Token):
                self.calls.add(str(children[0]))
            return cb(children)
        return wrapped

    @staticmethod
    def describe(rule) -> str:
        return f"{rule.origin.name}: {' '.join(s.name for s in rule.expansion)}" + (f" -> {rule.alias}" if rule.alias else "")

    def add(self, text: str, program=None, parts: tuple[str, ...] = ()) -> None:
        """`parts`: the texts a composed `text` was spliced from (a wrapper, the spec it wraps)."""
        self.programs += 1
        for part in parts:
            self.parser.parse(part)
        self.parser.parse(text)
        if re.search(r"#[^\n]*", text):
            self.comments += 1
        if program is not None:
            from ..ir import REDUCE, walk_stmts, stmt_values, walk_values
            scopes = set()
            for s in walk_stmts(program.body):
                for v in stmt_values(s):
                    for n in walk_values(v):
                        self.ops.add(n.op)
                        if n.op in REDUCE:
                            scopes.add(n.arg)
            for scope in scopes:
                self.scopes[scope] += 1
            for s in program.states:
                if s.cond is not None:
                    for n in walk_values(s.cond):
                        self.ops.add(n.op)

    def missing(self, check_ops: bool = True) -> list[str]:
        """Everything the grammar and builtins offer that no program so far used."""
        out = []
        for rule, n in self.productions.items():
            name = self.describe(rule)
            if n == 0 and not rule.origin.name.startswith("__") and name.split(" ->")[0] not in self.EXEMPT:
                out.append(f"grammar production `{name}`")
        for term in self.parser.terminals:
            if term.name in self.parser.ignore_tokens:
                if term.name == "COMMENT" and not self.comments:
                    out.append("terminal COMMENT")
                continue
            if term.name not in self.tokens and term.name not in self.EXEMPT_TERMINALS:
                out.append(f"terminal {term.name} ({term.pattern.value!r})")
                continue
            alts = _alternatives(term.pattern.value) if type(term.pattern).__name__ == "PatternRE" else None
            for alt in alts or ():
                if (term.name, alt) not in self.token_values:
                    out.append(f"terminal {term.name} alternative {alt!r}")
        for name in sorted(set(FUNCTIONS) | set(STATE_PREDICATES) | set(REDUCTION_FUNCTIONS)):
            if name not in self.calls:
                out.append(f"builtin {name}()")
        for name in sorted({*CONSTANTS, INITIAL_LR}):   # names the language gives a meaning
            if ("NAME", name) not in self.token_values:
                out.append(f"named value {name}")
        if check_ops:
            for scope, n in self.scopes.items():
                if not n:
                    out.append(f"a reduction over scope {scope!r}")
        if check_ops:
            from ..ir import Op
            for op in Op:
                if op not in self.ops:
                    out.append(f"IR op {op.name}")
        return [m for m in out if m not in self.NOT_DRAWN_YET]


@lru_cache(maxsize=1)
def grammar_productions() -> list[str]:
    return [Coverage.describe(r) for r in Coverage().productions]

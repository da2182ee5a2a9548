"""Identifier policy: what a spec may name things, and how names reach generated code.

Nothing from a spec reaches generated source except through `ident()` (checked
identifiers) or `literal()` (repr of a str/float/bool), so no spec can inject code."""
from __future__ import annotations

import builtins
import keyword
import math
import re

IDENT = re.compile(r"[a-z][a-z0-9_]{0,63}\Z")
CLASS_NAME = re.compile(r"[A-Z][A-Za-z0-9]{0,63}\Z")

# Names the generated modules use themselves, or that would shadow what they import.
GENERATED = frozenset("""
    torch tl triton math np numpy os sys self cls super group groups state params param_groups grads
    state_steps step_t closure loss defaults foreach fused capturable differentiable params_with_grad
    Tensor Optimizer kernel launch device dtype offs mask pid has_sparse_grad optimizer
""".split())
RESERVED = frozenset(keyword.kwlist) | frozenset(keyword.softkwlist) | frozenset(dir(builtins)) | GENERATED
# Spec-level words with a meaning of their own.
LANGUAGE = frozenset({"param", "grad", "step", "zeros", "empty", "scalar", "tensor", "true", "false",
                      "optimizer", "hyper", "flag", "state", "require", "update", "where", "if", "else",
                      "and", "or", "not"})


def problem_with_name(name: str) -> str | None:
    """Why `name` cannot be declared in a spec, or None if it can."""
    if not IDENT.match(name):
        if len(name) > 64:
            return "names are at most 64 characters"
        return "names are lower-case ASCII letters, digits and '_', starting with a letter"
    if name in LANGUAGE:
        return f"'{name}' is a word of the language"
    if name in RESERVED:
        return f"'{name}' is reserved (it would shadow a Python or generated-code name)"
    return None


def problem_with_class_name(name: str) -> str | None:
    if not CLASS_NAME.match(name):
        return "an optimizer's name is a CamelCase ASCII identifier (letters and digits, starting upper-case)"
    if name in RESERVED or name in ("Optimizer", "Tensor"):
        return f"'{name}' is reserved"
    return None


def ident(name: str) -> str:
    """The only door from a spec name to generated code."""
    if not (IDENT.match(name) or CLASS_NAME.match(name) or re.fullmatch(r"_?[A-Za-z][A-Za-z0-9_]*", name)) \
            or keyword.iskeyword(name):
        raise ValueError(f"not a safe identifier: {name!r}")
    return name


def literal(value) -> str:
    """A Python literal for a str, bool, int or float; floats round-trip exactly."""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, float):
        if math.isnan(value):
            return "float('nan')"
        if math.isinf(value):
            return "float('inf')" if value > 0 else "float('-inf')"
        return repr(value)
    if isinstance(value, int):
        return repr(value)
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, tuple):
        return "(" + ", ".join(literal(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    raise TypeError(f"no literal form for {type(value).__name__}")


def module_name(class_name: str) -> str:
    """CamelCase -> snake_case file name: AdamW -> adamw, NAdam -> nadam, SGD -> sgd."""
    return class_name.lower()


def plural(name: str) -> str:
    """The list name of a per-parameter value: exp_avg -> exp_avgs."""
    return name + "s"

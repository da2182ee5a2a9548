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
    Tensor Optimizer kernel launch device dtype offs mask pid has_sparse_grad optimizer partitioned
    state_dtype stochastic_rounding rounding_seed rounding_step
""".split())
# Locals of the generated functions (the loop's index, the kernel's tensor index, the fused launcher's
# and the foreach path's bookkeeping, the functional API's dispatch): a spec name equal to one would
# overwrite it, or be overwritten by it (found by optdsl.fuzz: `t` as a local sent the kernel's
# stores to a wrong tensor).
GENERATED_LOCALS = frozenset("""
    t i rows streams index view copies numels work_tensor work_start ptrs head table inputs hypers
    states block kernels reason func per_tensor steps original_params active stored n_columns
    reduced partials work_end work_channel scratch phase numel_list
""".split())
RESERVED = frozenset(keyword.kwlist) | frozenset(keyword.softkwlist) | frozenset(dir(builtins)) | GENERATED \
    | GENERATED_LOCALS
# Spec-level words with a meaning of their own.
LANGUAGE = frozenset({"param", "grad", "step", "zeros", "empty", "scalar", "tensor", "true", "false",
                      "optimizer", "hyper", "flag", "state", "require", "update", "where", "if", "else",
                      "and", "or", "not", "key", "keep", "none",
                      "channel", "group", "numel", "ndim", "channel_numel", "per", "inf", "initial_lr"})


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


def problem_with_derived_name(name: str, streams, tuple_hypers: dict[str, int]) -> str | None:
    """Why `name` would clash with a name generated code derives from the spec's others, or None:
    a stream's pointer table, dtype and presence constexprs (`m_ptrs`, `M_DTYPE`, `HAS_M`), an
    `empty` state's host flag (`m_is_empty`), a tuple hyper's kernel arguments (`betas_0`).
    `streams`: 'param', 'grad' and the state names."""
    for s in streams:
        for derived in (f"{s}_ptrs", f"{s}_dtype", f"has_{s}", f"{s}_is_empty", f"{s}s_out", f"{s}_list_out"):
            if name == derived:
                return f"'{name}' is the name generated code gives a value it derives from '{s}'; choose another name"
    m = re.fullmatch(r"(.+)_(\d+)", name)
    if m and m.group(1) in tuple_hypers and int(m.group(2)) < tuple_hypers[m.group(1)]:
        return f"'{name}' is the name generated code gives entry {m.group(2)} of '{m.group(1)}'; choose another name"
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
    if value is None:   # an optional hyper's default
        return "None"
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


LIST_SUFFIX = "_list"


def state_list_names(states, taken) -> dict[str, str | None]:
    """The list name each state gets in generated code (the functional API's argument):
    its plural (exp_avg -> exp_avgs), or `<name>_list` where the plural is already a
    name of the spec (Rprop's state `step_size` beside its hyper `step_sizes`).
    None where both are taken: the checker reports it."""
    taken = set(taken) | RESERVED
    out: dict[str, str | None] = {}
    for name in states:
        chosen = None
        for candidate in (plural(name), name + LIST_SUFFIX):
            if candidate not in taken and candidate not in out.values():
                chosen = candidate
                break
        out[name] = chosen
    return out


_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([a-z][a-z0-9_]*)(?:\[(\d+)\])?\}|[{}]")


def message_parts(message: str) -> list:
    """Split a `require` message into text and placeholders: "Invalid eta values: {etas[0]}, {etas[1]}"
    -> ["Invalid eta values: ", ("etas", 0), ", ", ("etas", 1)]. `{{` and `}}` are literal braces.
    Raises ValueError on a lone brace or a malformed placeholder."""
    parts: list = []
    text: list[str] = []
    pos = 0
    for m in _PLACEHOLDER.finditer(message):
        text.append(message[pos:m.start()])
        pos = m.end()
        token = m.group(0)
        if token in ("{{", "}}"):
            text.append(token[0])
        elif m.group(1) is not None:
            if "".join(text):
                parts.append("".join(text))
            text = []
            parts.append((m.group(1), int(m.group(2)) if m.group(2) is not None else None))
        else:
            raise ValueError(f"a lone `{token}` at character {m.start() + 1}: a placeholder is `{{name}}` or "
                             f"`{{name[0]}}`; write `{token * 2}` for a literal brace")
    text.append(message[pos:])
    if "".join(text):
        parts.append("".join(text))
    return parts


def message_source(parts, render_ref) -> str:
    """Python source building a message from its parts: text through literal(), each placeholder as
    str(<render_ref((name, index))>), which is how an f-string shows it."""
    pieces = [literal(p) if isinstance(p, str) else f"str({render_ref(p)})" for p in parts]
    return " + ".join(pieces) if pieces else literal("")

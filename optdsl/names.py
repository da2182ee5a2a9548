"""Identifier policy: what a spec may name things, and how names reach generated code.

Nothing from a spec reaches generated source except through `ident()` (checked
identifiers) or `literal()` (repr of a str/float/bool), so no spec can inject code."""
from __future__ import annotations

import builtins
import hashlib
import keyword
import math
import re

IDENT = re.compile(r"[a-z][a-z0-9_]{0,63}\Z")
CLASS_NAME = re.compile(r"[A-Z][A-Za-z0-9]{0,63}\Z")

# Every name generated code uses itself in a scope that also binds spec names: its imports, the
# Python builtins, the torch.optim signatures' arguments, the bookkeeping locals it spells plainly
# (the launcher's buckets and tables, ...; the kernel's and the loop's, `_pid _t _offs _mask _i`,
# start with `_`). A spec may still use any of them: `ident()` emits such a spec name as `_<name>_`,
# a form nothing else in generated code takes (generated names are plain words, or start with `_`
# and never end with one).
# Over-listing is harmless (a spec name is renamed that need not be); under-listing is a bug
# (tests/test_injection.py compiles a spec taking every one of these names).
GENERATED = frozenset("""
    torch tl triton math np numpy os sys self cls super group groups state params param_groups grads
    state_steps step_t closure loss defaults foreach fused capturable differentiable params_with_grad
    Tensor Optimizer kernel launch device dtype optimizer annotations
    load_stream store_stream load_scalar fold_sum fold_max write_scalar_states run programs
    j p r rows streams index view copies numels work_tensor work_start ptrs head table inputs hypers
    states block kernels reason func per_tensor steps original_params active stored n_columns
    reduced partials work_end work_channel scratch phase numel_list value ts n_tensors new_partials
    reduced_channel work shape_input rounding rounding_seeds aligned one_row
""".split())
PYTHON_BUILTINS = frozenset(n for n in dir(builtins) if not n.startswith("_"))
# Spec names emitted as `_<name>_` (see ident()).
SHADOWED = GENERATED | PYTHON_BUILTINS
# The torch.optim API's own argument names: a hyper or flag is a constructor keyword, a param_group
# key and a keyword of the functional form, so it cannot take one of these (states and locals can).
API_NAMES = frozenset({"self", "params", "grads", "state_steps", "foreach", "fused", "capturable",
                       "differentiable", "state_dtype", "stochastic_rounding", "rounding_seed",
                       "rounding_step", "partitioned"})
# Class names a spec may not take (they would shadow what the generated module uses).
RESERVED = PYTHON_BUILTINS | frozenset({"Optimizer", "Tensor", "GeneratedOptimizer"})
# Spec-level words with a meaning of their own.
LANGUAGE = frozenset({"param", "grad", "step", "zeros", "empty", "scalar", "tensor", "true", "false",
                      "optimizer", "hyper", "flag", "state", "require", "update", "where", "if", "else",
                      "and", "or", "not", "key", "keep", "none",
                      "channel", "group", "numel", "ndim", "channel_numel", "per", "inf", "initial_lr",
                      "row", "column", "dtype_eps",
                      "wrapper", "inner"})


def problem_with_name(name: str, api: bool = False) -> str | None:
    """Why `name` cannot be declared in a spec, or None if it can. `api`: a hyper's or a flag's name,
    which the optimizer's API spells as it is (see API_NAMES)."""
    if not IDENT.match(name):
        if len(name) > 64:
            return "names are at most 64 characters"
        return "names are lower-case ASCII letters, digits and '_', starting with a letter"
    if name in LANGUAGE:
        return f"'{name}' is a word of the language"
    if keyword.iskeyword(name):
        return f"'{name}' is a Python keyword"
    if api and name in API_NAMES:
        return (f"'{name}' is an argument of the optimizer's API (torch.optim's constructor or functional "
                "form), so a hyper or flag cannot take it")
    return None


def problem_with_class_name(name: str) -> str | None:
    if not CLASS_NAME.match(name):
        return "an optimizer's name is a CamelCase ASCII identifier (letters and digits, starting upper-case)"
    if name in RESERVED or name in ("Optimizer", "Tensor"):
        return f"'{name}' is reserved"
    return None


def ident(name: str) -> str:
    """The only door from a spec name to generated code: `name` itself, or `_<name>_` for a name that
    generated code uses itself (SHADOWED). Names generated code derives from a spec name are built
    from this one (`_<ident>_ptrs`, `_HAS_<IDENT>`, ...): each family has a `_` prefix and a suffix
    (or prefix) of its own, so they cannot meet each other, a spec name or a generated word."""
    if not (IDENT.match(name) or CLASS_NAME.match(name) or re.fullmatch(r"_?[A-Za-z][A-Za-z0-9_]*", name)) \
            or keyword.iskeyword(name):
        raise ValueError(f"not a safe identifier: {name!r}")
    return f"_{name}_" if name in SHADOWED else name


# Names generated code derives from a spec name (`i` = ident(name)). Every family starts with `_`
# and has an ending (lower case) or a start (upper case) no other family, no `_<name>_` and no
# generated word has, so two of them never meet whatever the spec's names:
#   `_<i>_ptrs` `_<i>_is_empty` `_<i>_stored` `_<i>_new` `_<i>_part` `_<i>_parts` `_<list>_out`
#   `_<i>_<k>` (entry k of a tuple hyper), `_HAS_<I>` `_DTYPE_<I>` `_SET_<I>`; host values are `_h<n>`.
def ptrs_name(name: str) -> str:
    return f"_{ident(name)}_ptrs"


def is_empty_name(name: str) -> str:
    return f"_{ident(name)}_is_empty"


def stored_name(name: str) -> str:
    return f"_{ident(name)}_stored"


def new_name(name: str) -> str:
    return f"_{ident(name)}_new"


def part_name(name: str) -> str:
    return f"_{ident(name)}_part"


def parts_name(name: str) -> str:
    return f"_{ident(name)}_parts"


def out_name(list_name: str) -> str:
    return f"_{ident(list_name)}_out"


def entry_name(name: str, index: int) -> str:
    return f"_{ident(name)}_{int(index)}"


def has_name(name: str) -> str:
    return f"_HAS_{ident(name).upper()}"


def dtype_name(name: str) -> str:
    return f"_DTYPE_{ident(name).upper()}"


def set_name(name: str) -> str:
    return f"_SET_{ident(name).upper()}"


def choice_name(name: str, value: str) -> str:
    """The constexpr of `name == "value"`: the value upper-cased where it is lower-case letters, digits
    and underscores (so two values never meet), else its letters and digits and a hash."""
    letters = re.sub(r"[^A-Za-z0-9]", "_", value).upper()
    tag = "" if re.fullmatch(r"[a-z0-9_]+", value) else "_" + hashlib.sha1(value.encode()).hexdigest()[:8].upper()
    return f"_IS_{ident(name).upper()}_{letters}{tag}"


# the upper-case families above stay apart from a flag's constexpr (its name upper-cased, or `_<NAME>_`)
assert not any(re.match(r"(has|dtype|set)_|h\d", n) for n in SHADOWED), "a SHADOWED name would meet a derived one"


def api_name(name: str) -> str:
    """A spec name where the API spells it as it is: a constructor or functional keyword, a
    param_group key. Checked like ident(), never renamed."""
    if not IDENT.match(name) or keyword.iskeyword(name):
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


def state_list_names(states, taken) -> dict[str, str]:
    """The list name each state gets in generated code (the functional API's argument):
    its plural (exp_avg -> exp_avgs), else `<name>_list`, `<name>_list2`, ... where the plural is
    already a name of the spec (Rprop's state `step_size` beside its hyper `step_sizes`).
    `taken`: every name the spec declares or assigns."""
    taken = set(taken) | SHADOWED | set(keyword.kwlist)   # state `i`: not `is`
    out: dict[str, str] = {}
    for name in states:
        k = 1
        candidate = plural(name)
        while candidate in taken or candidate in out.values():
            candidate = name + LIST_SUFFIX + (str(k) if k > 1 else "")
            k += 1
        out[name] = candidate
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

"""Nothing from a spec reaches generated source except as a checked identifier or a quoted
literal. Specs whose names, docs, numbers, keys and messages try to smuggle Python or Triton
code into the generated modules are rejected with a diagnostic, or emitted as inert text:
loading them (optdsl.load), constructing the optimizer and stepping every path executes
nothing (a canary file is never written, a canary global never set), and the generated
sources still compile."""
import builtins
import io
import os
import tokenize

os.environ.setdefault("TRITON_INTERPRET", "1")   # before anything imports a kernel

import pytest  # noqa: E402
import torch  # noqa: E402

import optdsl  # noqa: E402
from optdsl import names  # noqa: E402
from optdsl.compiler import compile_spec  # noqa: E402
from optdsl.diagnostics import CompileError  # noqa: E402

# What a payload does if it ever runs: write the canary file, or set a global.
RUN = "__import__('pathlib').Path('CANARY').write_text('pwned')"
SET = "setattr(__import__('builtins'), 'OPTDSL_CANARY', 1)"

UPDATE = "update {\n  param = param - lr * grad\n}\n"

HOSTILE = {
    # docs: the class docstring and the module docstring
    "doc: triple quotes": f'optimizer A "x\'\'\' ; {RUN} ; \'\'\'"\nhyper lr = 0.1\n' + UPDATE,
    "doc: single quote": f'optimizer A "x\' + {RUN} + \'"\nhyper lr = 0.1\n' + UPDATE,
    "doc: f-string braces": f'optimizer A "{{{RUN}}} {{{{x}}}}"\nhyper lr = 0.1\n' + UPDATE,
    "doc: percent and format": f'optimizer A "%s %(x)s {{0}} {{lr}} {RUN}"\nhyper lr = 0.1\n' + UPDATE,
    "doc: jinja": 'optimizer A "{{ RUN }} {% for x in y %}{% endfor %} {# c #}"\nhyper lr = 0.1\n' + UPDATE,
    "doc: line separator": 'optimizer A "x\u2028' + RUN + '"\nhyper lr = 0.1\n' + UPDATE,
    "doc: escape": 'optimizer A "x\\" + ' + RUN + ' + \\""\nhyper lr = 0.1\n' + UPDATE,
    # require messages: f-string-like placeholders are checked, the rest is text
    "message: quotes": f'optimizer A\nhyper lr = 0.1\nrequire lr < 1 else "\'); {RUN} #"\n' + UPDATE,
    "message: triple quotes": f'optimizer A\nhyper lr = 0.1\nrequire lr < 1 else "\'\'\'{RUN}\'\'\'"\n' + UPDATE,
    "message: f-string expression": f'optimizer A\nhyper lr = 0.1\nrequire lr < 1 else "{{{RUN}}}"\n' + UPDATE,
    "message: attribute placeholder": 'optimizer A\nhyper lr = 0.1\nrequire lr < 1 else "{lr.__class__}"\n' + UPDATE,
    "message: conversion placeholder": 'optimizer A\nhyper lr = 0.1\nrequire lr < 1 else "{lr!r}"\n' + UPDATE,
    "message: format spec": 'optimizer A\nhyper lr = 0.1\nrequire lr < 1 else "{lr:{x}}"\n' + UPDATE,
    "message: escaped braces": f'optimizer A\nhyper lr = 0.1\nrequire lr < 1 else "{{{{{RUN}}}}} {{lr}}"\n' + UPDATE,
    "message: placeholder of a non-name": 'optimizer A\nhyper lr = 0.1\nrequire lr < 1 else "{__import__}"\n' + UPDATE,
    "message: newline": f'optimizer A\nhyper lr = 0.1\nrequire lr < 1 else "x\n{RUN}"\n' + UPDATE,
    "message: backslash": f'optimizer A\nhyper lr = 0.1\nrequire lr < 1 else "\\\\" + {RUN} + "\\\\"\n' + UPDATE,
    # state keys (state_dict keys in generated code)
    "key: quotes": f'optimizer A\nhyper lr = 0.1\nstate m = zeros key "\'] ; {RUN} #"\n'
                   'update {\n  m = grad\n  param = param - lr * m\n}\n',
    "key: dunder": 'optimizer A\nhyper lr = 0.1\nstate m = zeros key "__class__"\n'
                   'update {\n  m = grad\n  param = param - lr * m\n}\n',
    "key: braces": f'optimizer A\nhyper lr = 0.1\nstate m = zeros key "{{{RUN}}}"\n'
                   'update {\n  m = grad\n  param = param - lr * m\n}\n',
    # names: only checked identifiers; everything else is a syntax error
    "name: dunder hyper": 'optimizer A\nhyper __import__ = 0.1\nupdate { param = param - __import__ * grad }\n',
    "name: attribute": 'optimizer A\nhyper lr = 0.1\nupdate { param = param - lr.__class__ * grad }\n',
    "name: call of a Python builtin": f'optimizer A\nhyper lr = 0.1\nupdate {{ param = param - {RUN} }}\n',
    "name: class with code": f'optimizer A(object): pass\n{RUN}\nclass B "x"\n' + UPDATE,
    "name: class dunder": 'optimizer __Canary__ "x"\nhyper lr = 0.1\n' + UPDATE,
    "name: unicode look-alike": 'optimizer A\nhyper lr = 0.1\nupdate { param = param - ｌr * grad }\n',
    # numbers
    "number: python expression": f'optimizer A\nhyper lr = 0.1 + {RUN}\n' + UPDATE,
    "number: not finite": 'optimizer A\nhyper lr = 1e999\n' + UPDATE,
    "number: hex and underscores": 'optimizer A\nhyper lr = 0x1_0\n' + UPDATE,
    "number: huge literal in math": 'optimizer A\nhyper lr = 0.1\nupdate { param = param - 1e999 * lr * grad }\n',
    "number: huge index": 'optimizer A\nhyper b = (0.1, 0.2)\nupdate { param = param - b[' + "9" * 5000 + '] * grad }\n',
    # comments and whitespace around code
    "comment: code in comments": f'# {RUN}\noptimizer A "d" # {SET}\nhyper lr = 0.1 # """ {RUN} """\n' + UPDATE,
    "crlf and tabs": f'optimizer A "d"\r\n\thyper lr = 0.1\r\n# {RUN}\r\n' + UPDATE.replace("\n", "\r\n"),
    "nul byte": f'optimizer A "d\x00{RUN}"\nhyper lr = 0.1\n' + UPDATE,
}

# Python keywords and words of the language: refused everywhere (other Python and generated-code
# names are free: see test_generated_code_names_are_free_for_a_spec)
RESERVED_NAMES = ["class", "def", "lambda", "import", "from", "return", "yield", "None", "True", "False", "not",
                  "state", "group", "step", "update", "hyper"]
# legal names that still read like generated-code variables: accepted, and harmless
LEGAL_NAMES = ["value", "x", "p", "lr", "out", "src", "name", "shape", "bias_correction",
               "exp_avgs", "steps_", "grad_", "state_", "numels_", "norm_"]

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")   # NumPy inside the Triton interpreter


@pytest.fixture
def canary(tmp_path, monkeypatch):
    monkeypatch.setenv("OPTDSL_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "canary"
    if hasattr(builtins, "OPTDSL_CANARY"):
        delattr(builtins, "OPTDSL_CANARY")
    yield path
    assert not path.exists(), "a spec ran code: the canary file was written"
    assert not hasattr(builtins, "OPTDSL_CANARY"), "a spec ran code: the canary global was set"


def _code_tokens(source: str):
    """Names and operators of a Python source, outside string literals and comments."""
    out = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type not in (tokenize.STRING, tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT,
                            tokenize.DEDENT, tokenize.ENDMARKER) and not tok.type == getattr(tokenize, "FSTRING_MIDDLE", -1):
            out.append(tok.string)
    return out


def _diagnosed(err: CompileError):
    assert err.diagnostics
    for d in err.diagnostics:
        assert d.span.line >= 1 and d.span.col >= 1, d
    assert ": error: " in err.render()


@pytest.mark.parametrize("label", sorted(HOSTILE))
def test_hostile_spec_is_rejected_or_inert(label, canary):
    text = HOSTILE[label].replace("CANARY", str(canary))
    try:
        cls = optdsl.load(text)
    except CompileError as err:
        _diagnosed(err)
        return
    compiled = compile_spec(text, "hostile.opt")
    for source in (compiled.eager_source, compiled.triton_source, compiled.cpu_source):
        compile(source, "<generated>", "exec")     # still valid Python
        code = _code_tokens(source)
        for word in ("__import__", "setattr", "pathlib", "write_text", str(canary)):
            assert word not in code, f"{word!r} reached generated code outside a string literal"
    for word in ("system", "popen", "#include <cstdlib>", str(canary)):   # the C++: only checked identifiers reach it
        assert word not in compiled.cpp_source, f"{word!r} reached the generated C++"
    params = [torch.zeros(5, requires_grad=True)]
    for kwargs in ({"foreach": False}, {"foreach": True}, {"fused": True}):
        opt = cls(params, **kwargs)
        for _ in range(2):
            params[0].grad = torch.ones(5)
            opt.step()
        opt.load_state_dict(opt.state_dict())
        repr(opt)
    assert cls.__doc__ is None or isinstance(cls.__doc__, str)


def test_require_message_is_shown_as_text_not_run(canary):
    text = f'optimizer A\nhyper lr = 0.1\nrequire lr < 1 else "\'\'\'{{{{{RUN}}}}}\'\'\' lr={{lr}}"\n' + UPDATE
    cls = optdsl.load(text.replace("CANARY", str(canary)))
    with pytest.raises(ValueError) as info:
        cls([torch.zeros(2, requires_grad=True)], lr=2.0)
    assert str(info.value) == f"'''{{{RUN.replace('CANARY', str(canary))}}}''' lr=2.0"


def test_doc_is_kept_as_text(canary):
    doc = f"x''' ; {RUN} ; '''"
    cls = optdsl.load(f'optimizer A "{doc}"\nhyper lr = 0.1\n' + UPDATE)
    assert cls.__doc__ == doc


@pytest.mark.parametrize("name", RESERVED_NAMES)
@pytest.mark.parametrize("where", ["hyper", "flag", "state", "local"])
def test_reserved_names_are_diagnosed(name, where, canary):
    decl = {"hyper": f"hyper {name} = 0.1\n", "flag": f"flag {name} = true\n", "state": f"state {name} = zeros\n",
            "local": ""}[where]
    body = f"  {name} = grad\n" if where == "local" else ""
    text = f'optimizer A\n{decl}update {{\n{body}  param = param - 0.1 * grad\n}}\n'
    with pytest.raises(CompileError) as info:
        optdsl.load(text)
    _diagnosed(info.value)


@pytest.mark.parametrize("name", sorted(names.API_NAMES))
def test_api_names_are_refused_for_hypers_and_flags_only(name, canary):
    for decl in (f"hyper {name} = 0.1\n", f"flag {name} = true\n"):
        with pytest.raises(CompileError) as info:
            optdsl.load(f'optimizer A\n{decl}update {{\n  param = param - 0.1 * grad\n}}\n')
        _diagnosed(info.value)
        assert "argument of the optimizer's API" in info.value.render()
    cls = optdsl.load(f'optimizer A\nstate {name} = zeros\nupdate {{\n  {name} = {name} + grad\n'
                      f'  param = param - 0.1 * {name}\n}}\n')
    p = torch.ones(2, requires_grad=True)
    p.grad = torch.ones(2)
    opt = cls([p], fused=True)
    opt.step()
    assert torch.equal(opt.state[p][name], torch.ones(2)) and torch.allclose(p.detach(), torch.full((2,), 0.9))


@pytest.mark.parametrize("name", LEGAL_NAMES)
def test_legal_names_that_look_like_generated_variables_work(name, canary):
    """Each as a hyper, a flag, a state and a local at once (with suffixes to keep them distinct),
    checked against the interpreter on every path."""
    from optdsl.fuzz.execute import Case, Group, run_case
    text = f'''optimizer A "names"
hyper {name} = 0.05
flag {name}_f = true
state {name}_s = zeros
update {{
  {name}_l = {name}_f ? grad : -grad
  {name}_s = 0.9 * {name}_s + 0.1 * {name}_l
  param = param - {name} * {name}_s
}}
'''
    case = Case(text, [Group([(3,), (1,), (40,)], ["float32", "bfloat16", "float32"])], steps=3, fused_steps=2)
    out = run_case(case, cache=str(canary.parent / "cache"))
    assert out.ok, out.summary()


@pytest.mark.parametrize("name", ["Optimizer", "Tensor", "Exception", "Object", "Torch", "Self", "A" * 65])
def test_class_names(name, canary):
    text = f'optimizer {name} "d"\nhyper lr = 0.1\n' + UPDATE
    try:
        cls = optdsl.load(text)
    except CompileError as err:
        _diagnosed(err)
        return
    assert cls.__name__ == name
    assert issubclass(cls, torch.optim.Optimizer)


# ---- any identifier but a keyword ------------------------------------------------------------
# Names generated code used (or derives) itself, which a spec used to be refused: it now renames its
# own instead. Each takes a declaration role (hyper, flag, state) in one spec and a local's in others.
# (spelled out here, not read from optdsl.names: a name dropped there must still be tested)
FREED_NAMES = """
    torch tl triton math np numpy os sys self cls super groups params param_groups grads state_steps step_t
    closure loss defaults foreach fused capturable differentiable params_with_grad kernel launch device dtype
    offs mask pid has_sparse_grad t i rows streams index view copies numels work_tensor work_start
    ptrs head table inputs hypers states block kernels reason func per_tensor steps original_params active
    stored n_columns reduced partials work_end work_channel scratch phase numel_list j p r value ts n_tensors
    load_stream store_stream load_scalar fold_sum fold_max run programs annotations work rounding rounding_seeds aligned one_row
""".split() + [
    "max", "min", "len", "sum", "abs", "str", "dict", "list", "bool", "float", "int", "any", "all", "zip",
    "enumerate", "range", "print", "type", "object", "pow", "round", "iter", "next", "open", "exec", "eval",
    "getattr", "setattr", "isinstance", "match", "case",
    # names generated code derives from other names of the spec (a state `m`, a tuple hyper `betas`)
    "m_ptrs", "has_m", "m_dtype", "m_is_empty", "ms", "m_list", "ms_out", "m_new", "m_part", "betas_0",
    "betas_1", "h1", "size0", "sqrt", "norm", "lerp", "clamp", "sign",
]
_DECL_SLOTS = ("hyper", "hyper", "hyper", "hyper", "flag", "flag", "state", "state", "state", "state")


def _names_spec(decl: list[str], local: list[str], cls: str) -> str:
    """A spec with declarations named `decl` (see _DECL_SLOTS) and a chain of locals named `local`;
    its numerics do not depend on the names."""
    h_lr, h_betas, h_eps, h_clip, f_sign, f_off, s_m, s_empty, s_count, s_v = decl
    lines = [f'optimizer {cls} "names"', f"hyper {h_lr} = 0.05", f"hyper {h_betas} = (0.9, 0.99)",
             f"hyper {h_eps} = 1e-8", f"hyper {h_clip} = none", f"flag {f_sign} = true", f"flag {f_off} = false",
             "state m = zeros", f"state {s_m} = zeros", f"state {s_empty} = empty", f"state {s_count}: scalar = zeros",
             f"state {s_v} = zeros", "update {",
             f"  m = {h_betas}[0] * m + (1 - {h_betas}[0]) * grad",
             f"  {s_m} = {h_betas}[1] * {s_m} + (1 - {h_betas}[1]) * grad * grad",
             f"  {s_empty} = is_empty({s_empty}) ? grad : 0.5 * {s_empty} + 0.5 * grad",
             f"  {s_count} = {s_count} + 1"]
    prev = "grad"
    for k, name in enumerate(local):
        if k % 7 == 3:      # host math, read by the next tensor local
            lines.append(f"  {name} = {h_lr} * {k % 5 + 1} / ({h_eps} + step)")
            lines.append(f"  {prev} = {prev} * (1 - 0.01 * {name})")
        elif k % 11 == 5:   # a reduction: the fused path's phased kernels
            lines.append(f"  {name} = norm({prev}) + {h_eps}")
            lines.append(f"  {prev} = {prev} / {name}")
        else:
            lines.append(f"  {name} = {f_sign} ? 0.5 * {prev} + 0.25 * m : -{prev}")
            prev = name
    lines += [f"  if {h_clip} != none {{ {prev} = clamp({prev}, -{h_clip}, {h_clip}) }}",
              f"  {s_v} = {f_off} ? {s_v} : {s_v} + {prev}",
              f"  param = param - {h_lr} * ({prev} + m / (sqrt({s_m}) + {h_eps}) + 0.1 * {s_empty})",
              "}"]
    return "\n".join(lines) + "\n"


def _run_paths(cls, kwargs_list):
    """Each path's parameters and states after three steps, from the same seed."""
    out = []
    for kwargs in kwargs_list:
        gen = torch.Generator().manual_seed(0)
        params = [torch.randn(shape, generator=gen).to(dtype).requires_grad_()
                  for shape, dtype in (((3,), torch.float32), ((4, 5), torch.bfloat16), ((40,), torch.float32))]
        opt = cls(params, **kwargs)
        for _ in range(3):
            for p in params:
                p.grad = torch.randn(p.shape, generator=gen).to(p.dtype)
            opt.step()
        states = [sorted((k, v.clone()) for k, v in opt.state[p].items()) for p in params]
        out.append(([p.detach().clone() for p in params], states))
    return out


def _decl_roles(start: int) -> list[str]:
    """Declaration names from FREED_NAMES, beginning at `start`: hypers and flags skip API names."""
    chosen, k = [], start
    for slot in _DECL_SLOTS:
        while FREED_NAMES[k % len(FREED_NAMES)] in chosen or FREED_NAMES[k % len(FREED_NAMES)] == "m" or (
                slot != "state" and FREED_NAMES[k % len(FREED_NAMES)] in names.API_NAMES):
            k += 1
        chosen.append(FREED_NAMES[k % len(FREED_NAMES)])
        k += 1
    return chosen


@pytest.mark.parametrize("start", range(0, len(FREED_NAMES), len(_DECL_SLOTS)))
def test_generated_code_names_are_free_for_a_spec(start, canary):
    """A spec taking the generated code's own names (and names it derives, and Python builtins) as
    hypers, flags, states and locals compiles, runs on every path, and matches bit for bit the same
    spec with plain names."""
    decl = _decl_roles(start)
    window = [FREED_NAMES[(start + len(decl) + k) % len(FREED_NAMES)] for k in range(36)]   # each a local thrice
    local = [n for n in window if n not in decl and n != "m"]
    plain_decl = [f"d{k}" for k in range(len(decl))]
    plain_local = [f"v{k}" for k in range(len(local))]
    spec = _names_spec(decl, local, "Named")
    compiled = compile_spec(spec, "named.opt")
    for source in (compiled.eager_source, compiled.triton_source):
        compile(source, "<generated>", "exec")
    cls, plain_cls = optdsl.load(spec), optdsl.load(_names_spec(plain_decl, plain_local, "Plain"))
    paths = ({"foreach": False}, {"foreach": True}, {"fused": True})
    got, want = _run_paths(cls, paths), _run_paths(plain_cls, paths)
    for kwargs, (g_params, g_states), (w_params, w_states) in zip(paths, got, want):
        for g, w in zip(g_params, w_params):
            assert torch.equal(g, w), kwargs
        for g, w in zip(g_states, w_states):
            names_g = [k for k, _ in g]
            assert names_g == sorted(["m", "step", *decl[6:]]), names_g   # state_dict keys are the spec's names
            # states match by declaration order (the plain spec's keys differ)
            order_g = {k: v for k, v in g}
            order_w = {k: v for k, v in w}
            for name, plain in zip(["m", "step", *decl[6:]], ["m", "step", *plain_decl[6:]]):
                assert torch.equal(order_g[name], order_w[plain]), (kwargs, name)
    # param_group keys and constructor keywords are the spec's names, as written
    opt = cls([torch.zeros(2, requires_grad=True)], **{decl[0]: 0.01})
    assert opt.param_groups[0][decl[0]] == 0.01 and decl[3] in opt.param_groups[0]

"""A table of malformed specs and the diagnostic each must produce (lark-style:
the table is the specification of our error messages). Every entry must end in
a CompileError with file:line:col, the source line and a caret -- never a traceback."""
import pytest

from optdsl.compiler import compile_spec
from optdsl.diagnostics import CompileError

CASES = [
    ('hyper lr = 1\nupdate { param = param }',
     'a spec must start with `optimizer Name "doc"`', 1, 1),
    ('optimizer',
     'a spec must start with `optimizer Name "doc"`', 1, 10),
    ('optimizer adam "x" update { param = param }',
     "an optimizer's name is a CamelCase ASCII identifier (letters and digits, starting upper-case)", 1, 11),
    ('optimizer A "x" hyper lr = 1 lr update { param = param }',
     'expected a declaration (hyper, flag, state, require) or the `update { ... }` block', 1, 30),
    ('optimizer A "x" hyper update { param = param }',
     'expected a hyper declaration `hyper name = default [where condition]`', 1, 30),
    ('optimizer A "x" hyper lr update { param = param }',
     'expected a hyper declaration `hyper name = default [where condition]`', 1, 26),
    ('optimizer A "x" hyper lr = update { param = param }',
     "a hyper's default must be a number or a tuple of numbers", 1, 28),
    ('optimizer A "x" hyper lr = x update { param = param }',
     "a hyper's default must be a number or a tuple of numbers", 1, 28),
    ('optimizer A "x" hyper lr = (1) update { param = param }',
     "a hyper's default must be a number or a tuple of numbers", 1, 30),
    ('optimizer A "x" hyper lr = 1 where update { param = param }',
     'expected an expression', 1, 43),
    ('optimizer A "x" hyper lr = 1e999 update { param = param }',
     "default of hyper 'lr' is not a finite number", 1, 23),
    ('optimizer A "x" flag f update { param = param }',
     "a flag's default must be `true` or `false`", 1, 24),
    ('optimizer A "x" flag f = 1 update { param = param }',
     "a flag's default must be `true` or `false`", 1, 26),
    ('optimizer A "x" state update { param = param }',
     'expected a state declaration `state name [: scalar] = zeros | empty | number | hyper [if condition]`', 1, 30),
    ('optimizer A "x" state m update { param = param }',
     'expected a state declaration `state name [: scalar] = zeros | empty | number | hyper [if condition]`', 1, 25),
    ('optimizer A "x" state m = (1, 2) update { param = param }',
     'expected a state declaration `state name [: scalar] = zeros | empty | number | hyper [if condition]`', 1, 27),
    ('optimizer A "x" state m = ones update { param = param }',
     "unknown initial value 'ones' for state 'm'", 1, 23),
    ('optimizer A "x" state m : matrix = zeros update { param = param }',
     "unknown state shape 'matrix' (expected 'scalar', 'group', 'row', 'column' or 'cover'; tensor state needs no annotation)", 1, 23),
    ('optimizer A "x" state m : scalar = empty update { param = param }',
     'scalar state cannot start `empty`; give it a number', 1, 23),
    ('optimizer A "x" require update { param = param }',
     'expected an expression', 1, 32),
    ('optimizer A "x" require true else update { param = param }',
     'a `require` needs a condition, `else` and a message in double quotes', 1, 35),
    ('optimizer A "x" update',
     'expected `{` to open the update block', 1, 23),
    ('optimizer A "x" update { param = param',
     'unclosed block: expected `}`', 1, 39),
    ('optimizer A "x" update { param = }',
     'expected an expression', 1, 34),
    ('optimizer A "x" update { param = param + }',
     'expected an expression', 1, 42),
    ('optimizer A "x" update { param = (param }',
     'expected `)`', 1, 41),
    ('optimizer A "x" update { param = f(param 2) }',
     'expected `)`', 1, 42),
    ('optimizer A "x" update { param = param ? 1 }',
     'expected `:` in a conditional expression `c ? a : b`', 1, 44),
    ('optimizer A "x" update { x = b[] param = param }',
     'an index must be a non-negative integer literal, `name[0]`', 1, 32),
    ('optimizer A "x" update { if true param = param }',
     'expected `{` after the condition of `if`', 1, 34),
    ('optimizer A "x" update { if true { } else param = param }',
     'expected `{` or `if` after `else`', 1, 43),
    ('optimizer A "x" update { param = param } extra',
     'unexpected text after the update block', 1, 42),
    ('optimizer A "x" update { param = param $ 2 }',
     'unexpected character `$`', 1, 40),
    ('optimizer A "x" update { param = \'p\' }',
     'unterminated or misplaced string: strings are only allowed as docs and messages, in double quotes, on one line', 1, 34),
    ('optimizer A "x" update { = param }',
     'expected a name', 1, 26),
    ('optimizer A "x" update { param = paramm }',
     "unknown name 'paramm' (did you mean 'param'?)", 1, 34),
    ('optimizer A "x" hyper lr = 1 update { param = param - lrr * grad }',
     "unknown name 'lrr' (did you mean 'lr'?)", 1, 55),
    ('optimizer A "x" update { param = sqrtt(param) }',
     "unknown function 'sqrtt' (did you mean 'sqrt'?)", 1, 34),
    ('optimizer A "x" update { param = sqrt(param, grad) }',
     'sqrt() takes 1 argument, got 2', 1, 34),
    ('optimizer A "x" update { param = sqrt }',
     "'sqrt' is a function; call it, e.g. sqrt(...)", 1, 34),
    ('optimizer A "x" hyper b = (1, 2) update { param = param * b }',
     "'b' is a tuple; use one entry, e.g. b[0]", 1, 59),
    ('optimizer A "x" hyper b = (1, 2) update { param = param * b[2] }',
     "index 2 is out of range: 'b' has 2 entries", 1, 59),
    ('optimizer A "x" hyper lr = 1 update { param = param * lr[0] }',
     "only tuple hypers can be indexed; 'lr' is not a tuple hyper", 1, 55),
    ('optimizer A "x" hyper lr = 1 update { lr = 2 param = param }',
     "cannot assign to hyper 'lr': hypers and flags are read-only in `update`", 1, 39),
    ('optimizer A "x" flag f = true update { f = false param = param }',
     "cannot assign to flag 'f': hypers and flags are read-only in `update`", 1, 40),
    ('optimizer A "x" update { grad = param param = param }',
     "cannot assign to input 'grad'; bind a new name, e.g. `g = ...`", 1, 26),
    ('optimizer A "x" update { step = 1 param = param }',
     "cannot assign to input 'step'; bind a new name, e.g. `g = ...`", 1, 26),
    ('optimizer A "x" update { g = grad }',
     "the update block never assigns 'param'", 1, 11),
    ('optimizer A "x" flag f = true update { param = f ? param : 1 > 2 }',
     'both branches of `?:` must have one type, not number and boolean', 1, 48),
    ('optimizer A "x" update { param = param + (grad > 0) }',
     'operands of `+` must be numbers', 1, 43),
    ('optimizer A "x" update { if grad > 0 { param = param } }',
     'the condition of `if` varies per element; use `c ? a : b` for an elementwise select', 1, 29),
    ('optimizer A "x" update { if 3 { param = param } }',
     'the condition of `if` must be a boolean, not a number', 1, 29),
    ('optimizer A "x" flag f = false state v = zeros if f update { param = param - v }',
     "state 'v' exists only if f; use it inside `if f { ... }` or `... ? v : ...`", 1, 78),
    ('optimizer A "x" flag f = false state v = zeros if f update { v = grad param = param }',
     "state 'v' exists only if f; use it inside `if f { ... }` or `... ? v : ...`", 1, 62),
    # a reduction is computed before the expression around it: only an `if` guards what it reads
    ('optimizer A "x" flag f = false state v = zeros if f update { c = f and amax(v) < 1 param = c ? param : grad }',
     "state 'v' exists only if f; use it inside `if f { ... }` or `... ? v : ...` (amax() is computed before the "
     "expression around it, so an `and` or `?:` outside it does not guard its operand: `if f { ... }`)", 1, 77),
    ('optimizer A "x" hyper h = none update { x = h != none ? norm(grad * h) : 1 param = param - x * grad }',
     "'h' may be none; use it inside `if h != none { ... }` or `h != none ? ... : ...` (norm() is computed before", 1, 69),
    ('optimizer A "x" hyper lr = 1 where lr > grad update { param = param }',
     'a `where` condition may use only hypers, flags and numbers, but this depends on per-element values', 1, 36),
    ('optimizer A "x" hyper lr = 1 where lr update { param = param }',
     'a `where` condition must be a boolean, not a number', 1, 36),
    ('optimizer A "x" require step > 1 else "no" update { param = param }',
     'a `require` condition may use only hypers, flags and numbers, but this depends on the step or per-tensor state', 1, 25),
    ('optimizer A "x" state s: scalar = 1 update { s = grad param = param }',
     "scalar state 's' needs a per-tensor value, but this expression varies per element", 1, 50),
    ('optimizer A "x" hyper lr = 1 hyper lr = 2 update { param = param }',
     "'lr' is declared twice (first at line 1)", 1, 36),
    ('optimizer A "x" hyper foreach = 1 update { param = param }',
     "'foreach' is an argument of the optimizer's API (torch.optim's constructor or functional form), "
     "so a hyper or flag cannot take it", 1, 23),
    ('optimizer A "x" hyper class = 1 update { param = param }',
     "'class' is a Python keyword", 1, 23),
    ('optimizer A "x" hyper Lr = 1 update { param = param }',
     "names are lower-case ASCII letters, digits and '_', starting with a letter", 1, 23),
    ('optimizer A "x" state grad = zeros update { param = param }',
     "'grad' is a word of the language", 1, 23),
    ('optimizer A "x" state m = zeros update { param = param - is_empty(m) }',
     'operands of `-` must be numbers', 1, 58),
    ('optimizer A "x" update { param = is_empty(grad) ? param : param }',
     'is_empty() takes the name of a state', 1, 34),
    ('optimizer A "x" update { x = not 1 param = param }',
     'operand of `not` must be a boolean', 1, 34),
    ('optimizer A "x" flag f = true update { param = param * (f and 1) }',
     'operands of `and` must be booleans', 1, 63),
    ('optimizer A "x" update { if true { x = 1 } param = param * x }',
     "unknown name 'x'", 1, 60),
    ('optimizer A "x" update { param = param } optimizer B "y" update { param = param }',
     'unexpected text after the update block', 1, 42),
    ('optimizer A "bad\ndoc" update { param = param }',
     'unterminated or misplaced string: strings are only allowed as docs and messages, in double quotes, on one line', 1, 13),
    ('optimizer A "x" update { x = 1 x = x > 0 param = param }\n',
     "'x' was a number, and is assigned a boolean here", 1, 32),
    # reductions and optional hypers
    ('optimizer A "x" update { param = param - norm(grad, rows) * grad }',
     'the last argument of norm() is its scope: one of tensor, channel, group, row, column', 1, 53),
    ('optimizer A "x" update { param = param - norm(grad, channel, group) * grad }',
     'norm() takes 1 argument and an optional scope (tensor, channel, group, row, column, cover), got 3 arguments', 1, 42),
    ('optimizer A "x" update { param = param - dot(grad) * grad }',
     'dot() takes 2 arguments and an optional scope (tensor, channel, group, row, column, cover), got 1 argument', 1, 42),
    ('optimizer A "x" update { if norm(grad, channel) > 1 { param = param - grad } }',
     'the condition of `if` varies per channel', 1, 29),
    ('optimizer A "x" state s: scalar = 0 update { s = norm(grad, channel) param = param - s * grad }',
     "scalar state 's' needs a per-tensor value, but this expression varies per channel", 1, 50),
    ('optimizer A "x" hyper c = none update { param = param - c * grad }',
     "'c' may be none; use it inside `if c != none { ... }`", 1, 57),
    ('optimizer A "x" hyper c = 1.0 update { param = c != none ? param - c * grad : param }',
     "'c' is never none", 1, 48),
    ('optimizer A "x" update { param = param - (grad != none ? 1 : 0) * grad }',
     '`none` stands only beside an optional hyper', 1, 43),
    ('optimizer A "x" hyper lr = 0.1 where lr > norm(param) update { param = param - lr * grad }',
     'a `where` condition may use only hypers, flags and numbers, but this depends on a reduction', 1, 38),
    ('optimizer A "x" update { w = 1 if norm(grad) > 1 { w = 2 } param = param - w * grad }',
     "'w' is set from host math under an `if` on a reduction", 1, 35),
    ('optimizer A "x" update { param = param - channel * grad }',
     "'channel' is a reduction scope", 1, 42),
    ('optimizer A "x" update { param = param - nrom(grad) * grad }',
     "unknown function 'nrom' (did you mean 'norm'?)", 1, 42),
    ('optimizer A "x" hyper c = none state s = c update { param = param - s * grad }',
     "state 's' cannot start from optional hyper 'c'", 1, 38),
    ('optimizer A "x" state m = empty update { m = is_empty(m) ? grad : 0.9 * m + grad '
     'x = is_empty(m) ? grad : m param = param - 0.1 * norm(x, group) * grad }',
     "cannot plan this update's reductions: a reduction needs `is_empty(m)` after the update stores 'm'", 1, 11),
    ('optimizer A "x" hyper c = 1 or 2 update { param = param }',
     "a hyper's default must be a number or a tuple of numbers", 1, 32),
    # a group-wide value under a per-tensor condition: only the tensors taking the branch would compute it
    ('optimizer A "x" update { x = 0 if step == ndim { x = rms(grad, group) } param = param - x * grad }',
     "rms(…, group) is one value for the whole group, but under the per-tensor condition at line 1, column 35 only "
     "the tensors taking that branch would compute it: compute it before the condition and use the value there", 1, 54),
    ('optimizer A "x" update { param = param - 0.1 * (amax(grad) > 1 ? norm(grad, group) : 1) * grad }',
     "norm(…, group) is one value for the whole group, but under the per-tensor condition at line 1, column 49 only "
     "the tensors taking that branch would compute it: compute it before the condition and use the value there", 1, 66),
    # language conveniences (issue 11): new builtins, `inf`, `initial_lr`, `keep step per group`
    ('optimizer A "x" update { param = param - mod(grad) * grad }',
     "mod() takes 2 arguments, got 1", 1, 42),
    ('optimizer A "x" update { param = param - sigmoid(grad, 2) * grad }',
     "sigmoid() takes 1 argument, got 2", 1, 42),
    ('optimizer A "x" update { param = param - modd(grad, 2) * grad }',
     "unknown function 'modd' (did you mean 'mod'?)", 1, 42),
    ('optimizer A "x" update { param = param - mod(grad, 2 > 1) * grad }',
     "arguments of mod() must be numbers", 1, 52),
    ('optimizer A "x" update { param = param - floor * grad }',
     "'floor' is a function; call it, e.g. floor(...)", 1, 42),
    ('optimizer A "x" hyper inf = 1 update { param = param - inf * grad }',
     "'inf' is a word of the language", 1, 23),
    ('optimizer A "x" update { param = param - initial_lr * grad }',
     "'initial_lr' is the param group's lr at construction; it needs a hyper 'lr'", 1, 42),
    ('optimizer A "x" hyper lr = 1 or none update { param = param - initial_lr * grad }',
     "('lr' here is optional)", 1, 63),
    ('optimizer A "x" update { initial_lr = 1 param = param - grad }',
     "'initial_lr' is a word of the language", 1, 26),
    ('optimizer A "x" keep step per channel update { param = param - 0.1 * grad }',
     "the step is counted `per tensor` (torch.optim's way, the default) or `per group`, not per 'channel'", 1, 31),
    ('optimizer A "x" keep step keep step per group update { param = param - 0.1 * grad }',
     "the step is counted either per tensor or per group, not both", 1, 32),
    ('optimizer A "x" keep step per update { param = param }',
     "expected `keep step`, `keep step per group` or `keep step as int`", 1, 38),
    ('optimizer A "x" hyper lr = 1 require initial_lr > 0 else "no" update { param = param - lr * grad }',
     "'initial_lr' can be read only in `update`", 1, 38),
    # issue 11: definite assignment of `empty` states, defaults against their checks, the new user's slips
    ('optimizer EmptyRead\nhyper lr = 1e-3\nstate x0 = empty\nupdate {\n  param = param - lr * (param - x0)\n  x0 = grad\n}\n',
     "state 'x0' starts `empty`, and this read can come before its first store (on the first step it has no "
     "value): guard it with `is_empty(x0)`, e.g. `is_empty(x0) ? grad : x0`, or store 'x0' before reading it", 5, 33),
    ('optimizer A "x" state m = empty update { if step > 1 { param = param - m } else { param = param } m = grad }',
     "state 'm' starts `empty`, and this read can come before its first store", 1, 72),
    ('optimizer A "x" state m = empty update { x = (is_empty(m) or grad > 0) ? grad : m m = grad param = param - x }',
     "state 'm' starts `empty`, and this read can come before its first store", 1, 81),
    ('optimizer A "x" state m = empty update { x = not is_empty(m) and sum(m) > 0 ? m : grad m = grad '
     'param = param - x }',
     "state 'm' starts `empty`, and this read can come before its first store", 1, 70),
    ('optimizer A "x" hyper lr = -1 where lr > 0 update { param = param - lr * grad }',
     "the default of hyper 'lr' fails `lr > 0`: built with its defaults, the class would raise ValueError: "
     "Invalid learning rate: -1", 1, 28),
    ('optimizer A "x" hyper betas = (0.9, 1.5) where 0 <= betas[0] < 1 and 0 <= betas[1] < 1 '
     'update { param = param - betas[0] * betas[1] * grad }',
     "the default of hyper 'betas' fails `0 <= betas[1] < 1`: built with its defaults, the class would raise "
     "ValueError: Invalid beta parameter at index 1: 1.5", 1, 31),
    ('optimizer A "x" hyper etas = (0.5, 0.9) require 0 < etas[0] < 1 < etas[1] else "Invalid eta values: {etas[0]}, '
     '{etas[1]}" update { param = param - etas[0] * etas[1] * grad }',
     "the defaults fail this `require`: built with its defaults, the class would raise ValueError: "
     "Invalid eta values: 0.5, 0.9", 1, 41),
    ('optimizer A "x" update { param = param ** 2 }',
     "`**` is not an operator; a power is written `x ^ y`", 1, 40),
    ('optimizer A "x" state m = grad update { m = is_empty(m) ? grad : m param = param - m }',
     "unknown initial value 'grad' for state 'm'; a state starts as `zeros`, `empty`, a number or a hyper's value. "
     "To start from a value of the first step, declare it `empty` and store it there: "
     "`m = is_empty(m) ? grad : ...`", 1, 23),
    ('optimizer A "x" update { class = grad * 2 param = param - class * class }',
     "'class' is a Python keyword", 1, 26),
    ('optimizer A "x" update { param = frobnicate(param) }',
     "unknown function 'frobnicate'; the functions are elementwise math: abs, ", 1, 34),
]


@pytest.mark.parametrize("source, message, line, col", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_malformed_spec_gets_a_positioned_diagnostic(source, message, line, col):
    with pytest.raises(CompileError) as info:
        compile_spec(source, "t.opt")
    first = info.value.diagnostics[0]
    assert message in first.message
    assert (first.span.line, first.span.col) == (line, col)
    rendered = info.value.render().splitlines()
    assert rendered[0].startswith(f"t.opt:{line}:{col}: error: ")
    # the source line and a caret under the culprit
    assert len(rendered) >= 3 and rendered[2].lstrip().startswith("^")
    assert rendered[2].index("^") - 2 == col - 1 or len(source.splitlines()[line - 1]) > 120


def test_table_covers_at_least_forty_specs():
    assert len(CASES) >= 40


def test_every_syntax_example_maps_to_its_own_message():
    from optdsl.parse import SYNTAX_EXAMPLES
    for label, examples in SYNTAX_EXAMPLES.items():
        for example in examples:
            with pytest.raises(CompileError) as info:
                compile_spec(example, "ex.opt")
            assert info.value.diagnostics[0].message.startswith(label), (example, info.value.diagnostics[0].message)


def test_semantic_errors_are_collected_and_reported_together():
    source = """optimizer A "x"
hyper lr = 1
update {
  g = gradd
  m = lrr * 2
  param = param - sqrtt(g)
}
"""
    with pytest.raises(CompileError) as info:
        compile_spec(source, "multi.opt")
    messages = [d.message for d in info.value.diagnostics]
    assert len(messages) == 3
    assert "unknown name 'gradd' (did you mean 'grad'?)" in messages[0]
    assert "unknown name 'lrr' (did you mean 'lr'?)" in messages[1]
    assert "unknown function 'sqrtt' (did you mean 'sqrt'?)" in messages[2]
    assert [d.span.line for d in info.value.diagnostics] == [4, 5, 6]


def test_rendering_shows_line_and_caret_under_the_name():
    source = 'optimizer A "x"\nupdate {\n  param = param - exp_avgg\n}\n'
    with pytest.raises(CompileError) as info:
        compile_spec(source, "adam.opt")
    assert info.value.render() == (
        "adam.opt:3:19: error: unknown name 'exp_avgg'\n"
        "    param = param - exp_avgg\n"
        "                    ^~~~~~~~"
    )


def test_too_deep_nesting_is_a_diagnostic_not_a_recursion_error():
    source = 'optimizer A "x" update { param = param + ' + "(" * 5000 + "grad" + ")" * 5000 + " }"
    with pytest.raises(CompileError) as info:
        compile_spec(source, "deep.opt")
    assert "nested too deeply" in info.value.diagnostics[0].message
    long_sum = 'optimizer A "x" update { param = param' + " + grad" * 5000 + " }"
    with pytest.raises(CompileError) as info:
        compile_spec(long_sum, "long.opt")
    assert "nested too deeply" in info.value.diagnostics[0].message


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "\x00", "optimizer A \"x\" update { param = param \x00 }",
                                  "\ufeffoptimizer", "optimizer A \"x\" update { param = param }\r\n\r\n" + "}" * 3])
def test_odd_inputs_end_in_a_diagnostic(text):
    with pytest.raises(CompileError) as info:
        compile_spec(text, "odd.opt")
    assert info.value.diagnostics[0].span.line >= 1


def test_crlf_and_bom_are_accepted():
    source = '\ufeffoptimizer A "x"\r\nhyper lr = 0.1\r\nupdate {\r\n  param = param - lr * grad\r\n}\r\n'
    assert compile_spec(source, "crlf.opt").program.name == "A"


def test_a_local_with_a_reserved_name_is_one_error_not_one_per_use():
    source = 'optimizer A "x" update { class = grad * 2\n u = class + 1\n param = param - class * u }'
    with pytest.raises(CompileError) as info:
        compile_spec(source, "t.opt")
    assert [(d.span.line, d.span.col) for d in info.value.diagnostics] == [(1, 26)]


def test_unknown_function_lists_every_builtin_by_group():
    from optdsl.builtins import FUNCTION_GROUPS
    with pytest.raises(CompileError) as info:
        compile_spec('optimizer A "x" update { param = sqrtt(param) }', "t.opt")
    message = info.value.diagnostics[0].message
    assert message.startswith("unknown function 'sqrtt' (did you mean 'sqrt'?); the functions are ")
    for group, table in FUNCTION_GROUPS.items():
        assert f"{group}: {', '.join(sorted(table))}" in message
    assert {"sqrt", "norm", "size", "is_empty"} <= {name for table in FUNCTION_GROUPS.values() for name in table}


# Warnings: the spec compiles, `Compiled.warnings` holds each (severity "warning", positioned).
WARNING_CASES = [
    ('optimizer A "x" hyper lr = 0.1 hyper beta = 0.9 update { param = param - lr * grad }',
     "hyper 'beta' is never used: the update, the states and the checks do not read it", 1, 38),
    ('optimizer A "x" hyper lr = 0.1 where lr > 0 update { param = param - grad }',
     "hyper 'lr' is never used", 1, 23),
    ('optimizer A "x" flag nesterov = false update { param = param - grad }',
     "flag 'nesterov' is never used: no condition tests it", 1, 22),
    ('optimizer A "x" state m = zeros update { param = param - grad }',
     "state 'm' is never used: the update neither reads nor stores it", 1, 23),
]


@pytest.mark.parametrize("source, message, line, col", WARNING_CASES, ids=[f"warn{i}" for i in range(len(WARNING_CASES))])
def test_unused_declarations_are_positioned_warnings(source, message, line, col):
    compiled = compile_spec(source, "t.opt")
    assert len(compiled.warnings) == 1
    warning = compiled.warnings[0]
    assert warning.severity == "warning" and message in warning.message
    assert (warning.span.line, warning.span.col) == (line, col)
    rendered = warning.render(source).splitlines()
    assert rendered[0].startswith(f"t.opt:{line}:{col}: warning: ")
    assert rendered[2].index("^") - 2 == col - 1


def test_declarations_read_outside_the_update_are_used():
    source = ('optimizer A "x" hyper lr = 0.1 hyper lo = 0 hyper init = 0.5 flag f = true '
              'hyper cap = 1 where cap > lo require lr < 1 or f else "no" state m = init if cap > 0 '
              'update { if cap > 0 { m = 0.5 * m + grad } param = param - lr * grad }')
    assert compile_spec(source, "t.opt").warnings == ()


def test_check_prints_warnings_and_werror_makes_them_errors(tmp_path, capsys):
    from optdsl.cli import main
    spec = tmp_path / "u.opt"
    spec.write_text('optimizer U "x"\nhyper lr = 0.1\nflag f = false\nupdate {\n  param = param - lr * grad\n}\n')
    assert main(["check", str(spec)]) == 0
    err = capsys.readouterr().err
    assert f"{spec}:3:6: warning: flag 'f' is never used" in err and "  flag f = false\n       ^" in err
    assert main(["check", "--werror", str(spec)]) == 1
    captured = capsys.readouterr()
    assert f"{spec}:3:6: error: flag 'f' is never used" in captured.err and "[--werror]" in captured.err
    assert "ok" not in captured.out


def test_shipped_specs_have_no_warnings():
    from optdsl.build import spec_files
    for path in spec_files():
        compiled = compile_spec(path.read_text(encoding="utf-8"), path.name)
        assert compiled.warnings == (), [w.render(path.read_text(encoding="utf-8")) for w in compiled.warnings]

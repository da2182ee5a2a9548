"""Regression tests for the four bugs of issue 11: an `empty` state read before its first store,
tuple hypers of the wrong length, a default its own `where` refuses, and NumPy's warnings from
`0 ^ y` under the Triton interpreter."""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")   # before anything imports a kernel

import warnings  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from optdsl import optim  # noqa: E402
from optdsl.cli import main  # noqa: E402
from optdsl.compiler import compile_ir  # noqa: E402
from optdsl.interp import Interpreter  # noqa: E402
from optdsl.loader import load  # noqa: E402

PATHS = {"loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}

EMPTY_READ = """optimizer EmptyRead
hyper lr = 1e-3
state x0 = empty
update {
  param = param - lr * (param - x0)
  x0 = grad
}
"""


def _run(cls, kw, steps=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    p = torch.randn(3, 4, generator=g).requires_grad_()
    opt = cls([p], lr=0.1, **kw)
    for _ in range(steps):
        p.grad = torch.randn(3, 4, generator=g)
        opt.step()
    return p.detach()


# ---- an `empty` state read before its first store ---------------------------------------------

def test_the_issues_unguarded_empty_read_fails_optdsl_check_at_the_read(tmp_path, capsys):
    spec = tmp_path / "empty_read.opt"
    spec.write_text(EMPTY_READ)
    assert main(["check", str(spec)]) == 1
    err = capsys.readouterr().err
    assert f"{spec}:5:33: error: state 'x0' starts `empty`" in err
    assert "guard it with `is_empty(x0)`" in err and "or store 'x0' before reading it" in err


# Reads the analysis accepts: each runs, and the three paths agree (the bug: they disagreed, the
# loop and foreach paths raising a TypeError, the fused one reading zeros).
GUARDED = {
    "select": "m = is_empty(m) ? grad : 0.9 * m + grad\n param = param - lr * m",
    "if-else": "if is_empty(m) { m = grad } else { m = 0.9 * m + grad }\n param = param - lr * m",
    "if-not": "if not is_empty(m) { x = m } else { x = grad }\n param = param - lr * x\n m = grad",
    "where": "x = where(is_empty(m), grad, m)\n param = param - lr * x\n m = grad",
    "local-test": "first = is_empty(m)\n x = first ? grad : m\n param = param - lr * x\n m = grad",
    "store-first": "if is_empty(m) { m = grad }\n param = param - lr * m",
    "if-on-reduction": "if not is_empty(m) and norm(grad) > 0 { param = param - lr * m } else "
                       "{ param = param - lr * grad }\n m = grad",
}


@pytest.mark.parametrize("form", sorted(GUARDED))
def test_guarded_empty_reads_run_alike_on_every_path(form):
    cls = load(f'optimizer Guarded "x"\nhyper lr = 0.1\nstate m = empty\nupdate {{\n {GUARDED[form]}\n}}\n')
    loop = _run(cls, PATHS["loop"])
    for path in ("foreach", "fused"):
        torch.testing.assert_close(_run(cls, PATHS[path]), loop, rtol=1e-6, atol=1e-6, msg=lambda m: f"{path}: {m}")


# Reads refused: each would raise in the eager paths on the first step (torch.where and `and`
# compute both sides; a step test says nothing about the state).
UNGUARDED = {
    "after-store-in-one-branch": "if step > 1 { m = grad }\n param = param - lr * m",
    "step-test": "if step > 1 { param = param - lr * m } else { param = param }\n m = grad",
    "elementwise-select": "x = (is_empty(m) or grad > 0) ? grad : m\n param = param - lr * x\n m = grad",
    "and-operand": "x = not is_empty(m) and sum(m) > 0 ? m : grad\n param = param - lr * x\n m = grad",
    "reduction-select": "x = is_empty(m) or amax(m) > 1 ? grad : m\n param = param - lr * x\n m = grad",
}


@pytest.mark.parametrize("form", sorted(UNGUARDED))
def test_unguarded_empty_reads_are_compile_errors(form):
    from optdsl.diagnostics import CompileError
    with pytest.raises(CompileError) as info:
        compile_ir(f'optimizer Unguarded "x"\nhyper lr = 0.1\nstate m = empty\nupdate {{\n {UNGUARDED[form]}\n}}\n')
    assert [d.message.split(",")[0] for d in info.value.diagnostics] == ["state 'm' starts `empty`"]


# ---- tuple hypers of the wrong length ---------------------------------------------------------

@pytest.mark.parametrize("betas, got", [((0.9,), 1), ((0.9, 0.999, 0.5), 3), ([0.9], 1)])
def test_a_tuple_hyper_of_the_wrong_length_is_a_valueerror_naming_it(betas, got):
    p = torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match=rf"^Invalid betas value: expected a tuple of 2 numbers, got {got}: "):
        optim.Adam([p], betas=betas)
    optim.Adam([p], betas=[0.8, 0.9])   # any sequence of the right length


def test_a_short_tuple_indexed_past_its_end_is_a_valueerror_not_an_indexerror():
    source = 'optimizer Three "x"\nhyper c = (0.1, 0.2, 0.3)\nupdate { param = param - c[0] * c[2] * grad }\n'
    cls = load(source)
    p = torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match=r"^Invalid c value: expected a tuple of 3 numbers, got 2: \(0\.1, 0\.2\)$"):
        cls([p], c=(0.1, 0.2))
    with pytest.raises(ValueError, match=r"expected a tuple of 3 numbers, got 2"):   # the oracle agrees
        Interpreter(compile_ir(source), {"c": (0.1, 0.2)})


def test_an_optional_tuple_hyper_is_length_checked_only_when_given():
    cls = load('optimizer OptTuple "x"\nhyper c = (0.1, 0.2) or none\n'
               'update { param = c != none ? param - c[1] * grad : param }\n')
    p = torch.zeros(2, requires_grad=True)
    cls([p], c=None)
    with pytest.raises(ValueError, match=r"^Invalid c value: expected a tuple of 2 numbers, got 3"):
        cls([p], c=(0.1, 0.2, 0.3))


# ---- a default its own `where` refuses --------------------------------------------------------

def test_a_default_its_where_refuses_fails_optdsl_check_at_the_default(tmp_path, capsys):
    spec = tmp_path / "bad_default.opt"
    spec.write_text('optimizer BadDefault "x"\nhyper lr = 0.1\nhyper momentum = 1.5 where 0 <= momentum < 1\n'
                    'update {\n  param = param - lr * momentum * grad\n}\n')
    assert main(["check", str(spec)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == (f"{spec}:3:18: error: the default of hyper 'momentum' fails `0 <= momentum < 1`: built with "
                      "its defaults, the class would raise ValueError: Invalid momentum value: 1.5")
    assert err[2] == "                   ^~~"


def test_an_absent_optional_default_is_not_checked():
    compile_ir('optimizer A "x" hyper c = none where c > 0 update { param = c != none ? param - c * grad : param }')


# ---- `0 ^ y` under the Triton interpreter -----------------------------------------------------

POWERS = 'optimizer Powers "x"\nhyper lr = 0.1\nhyper e = 1.5\nupdate {\n  param = param - lr * (abs(param) ^ e) * grad\n}\n'


@pytest.mark.parametrize("e", [1.5, 0.5, 3.0, -0.5])
def test_a_zero_base_under_the_interpreter_warns_nothing_and_keeps_its_value(e):
    cls = load(POWERS)
    results = {}
    for path in ("loop", "fused"):
        p = torch.tensor([0.0, -0.0, 2.0, 0.0, -3.0], requires_grad=True)
        p.grad = torch.ones(5)
        opt = cls([p], e=e, **PATHS[path])
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            opt.step()
        results[path] = p.detach()
    torch.testing.assert_close(results["fused"], results["loop"], equal_nan=True)


def test_an_fp32_overflow_under_the_interpreter_warns_nothing():
    cls = load('optimizer Overflow "x"\nhyper lr = 0.1\nupdate {\n  param = param - lr * (grad * grad) * grad\n}\n')
    p = torch.ones(4, requires_grad=True)
    p.grad = torch.full((4,), 1e30)
    opt = cls([p], fused=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.step()
    assert torch.equal(p.detach(), torch.full((4,), -torch.inf))

"""`sparse rows`: a sparse gradient updates only the rows it touches, on every path. SparseAdam
against torch.optim.SparseAdam on an nn.Embedding(sparse=True) model, a user spec against
torch.optim.Adagrad's sparse path, and the checker's refusals."""
import io
import os

os.environ.setdefault("TRITON_INTERPRET", "1")   # before anything imports a kernel

import pytest  # noqa: E402
import torch  # noqa: E402

import optdsl  # noqa: E402
from optdsl.diagnostics import CompileError  # noqa: E402
from optdsl.optim import SparseAdam  # noqa: E402

PATHS = ("loop", "foreach", "fused")
BATCHES = [torch.tensor([1, 4, 4, 7]), torch.tensor([2, 2, 9, 0]), torch.tensor([4, 1]), torch.tensor([8])]


def _path(path):
    return {"loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}[path]


def embedding_run(make_sparse, make_dense, steps=6):
    """An embedding (sparse gradients) and a linear head (dense ones), each with its optimizer, as
    torch's docs pair SparseAdam with Adam. Returns (the initial table, the table after each step,
    the optimizers)."""
    torch.manual_seed(0)
    emb = torch.nn.Embedding(10, 3, sparse=True)
    head = torch.nn.Linear(3, 1)
    first = emb.weight.detach().clone()
    opt_s, opt_d = make_sparse([emb.weight]), make_dense(head.parameters())
    tables = []
    for k in range(steps):
        opt_s.zero_grad()
        opt_d.zero_grad()
        idx = BATCHES[k % len(BATCHES)]
        ((head(emb(idx)) - 1.0) ** 2).sum().backward()
        opt_s.step()
        opt_d.step()
        tables.append(emb.weight.detach().clone())
    return first, tables, opt_s


@pytest.mark.parametrize("path", PATHS)
def test_sparse_adam_on_an_embedding_matches_torch_and_leaves_untouched_rows_alone(path):
    first, ours, opt = embedding_run(lambda ps: SparseAdam(ps, lr=0.05, **_path(path)),
                                     lambda ps: torch.optim.Adam(ps, lr=0.05))
    _, theirs, ref = embedding_run(lambda ps: torch.optim.SparseAdam(ps, lr=0.05),
                                   lambda ps: torch.optim.Adam(ps, lr=0.05))
    before = first
    for k, (a, b) in enumerate(zip(ours, theirs)):
        untouched = sorted(set(range(10)) - set(BATCHES[k % len(BATCHES)].tolist()))
        assert torch.equal(a[untouched], before[untouched]), f"step {k}: an untouched row changed"
        # the fused kernel's math is float32 in another order (sqrt, division): a few ulps
        same = torch.equal(a, b) if path != "fused" else torch.allclose(a, b, rtol=1e-6, atol=1e-7)
        assert same, f"step {k}: {(a - b).abs().max():.3e} from torch.optim.SparseAdam"
        before = a
    (p,) = opt.param_groups[0]["params"]
    (q,) = ref.param_groups[0]["params"]
    for key in ("exp_avg", "exp_avg_sq"):
        assert torch.allclose(opt.state[p][key], ref.state[q][key], rtol=1e-6, atol=0) if path == "fused" \
            else torch.equal(opt.state[p][key], ref.state[q][key]), key
    assert float(opt.state[p]["step"]) == ref.state[q]["step"] == 6


def test_rows_touched_twice_are_summed_before_the_update():
    def run(cls):
        p = torch.zeros(4, 2, requires_grad=True)
        opt = cls([p], lr=0.1)
        index = torch.tensor([[3, 1, 3]])
        p.grad = torch.sparse_coo_tensor(index, torch.tensor([[1.0, 2.0], [0.5, 0.5], [0.25, -4.0]]), (4, 2),
                                         check_invariants=True)
        opt.step()
        return p.detach()
    ours, theirs = run(SparseAdam), run(torch.optim.SparseAdam)
    assert torch.equal(ours, theirs) and torch.equal(ours[[0, 2]], torch.zeros(2, 2))


def test_a_gradient_that_touches_no_row_counts_the_step_and_changes_nothing():
    for cls in (SparseAdam, torch.optim.SparseAdam):
        p = torch.ones(3, 2, requires_grad=True)
        opt = cls([p], lr=0.1)
        p.grad = torch.sparse_coo_tensor(torch.zeros((1, 0), dtype=torch.long), torch.zeros(0, 2), (3, 2),
                                         check_invariants=True)
        opt.step()
        assert torch.equal(p.detach(), torch.ones(3, 2))
        assert float(opt.state[p]["step"]) == 1


def test_a_dense_gradient_is_refused_by_sparse_rows_only():
    p = torch.zeros(3, requires_grad=True)
    p.grad = torch.ones(3)
    with pytest.raises(RuntimeError, match=r"SparseAdam does not support dense gradients: parameter "
                                           r"\(param_groups\[0\]\['params'\]\[0\], shape \(3,\)\)"):
        SparseAdam([p]).step()


def _resumed_run(first_cls, second_cls, steps=6, switch_after=3):
    """The embedding model, stepped by first_cls, then from its state_dict (saved and loaded
    through bytes) by second_cls."""
    torch.manual_seed(0)
    emb = torch.nn.Embedding(10, 3, sparse=True)
    head = torch.nn.Linear(3, 1)
    opt = first_cls([emb.weight], lr=0.05)
    for k in range(steps):
        if k == switch_after:
            buffer = io.BytesIO()
            torch.save(opt.state_dict(), buffer)
            buffer.seek(0)
            opt = second_cls([emb.weight], lr=0.05)
            opt.load_state_dict(torch.load(buffer, weights_only=True))
        opt.zero_grad()
        head.zero_grad()
        ((head(emb(BATCHES[k % len(BATCHES)])) - 1.0) ** 2).sum().backward()
        opt.step()
    return emb.weight.detach()


def test_a_checkpoint_round_trips_and_torchs_loads_mid_run_bit_for_bit():
    straight = _resumed_run(SparseAdam, SparseAdam, switch_after=99)
    assert torch.equal(_resumed_run(SparseAdam, SparseAdam), straight)
    assert torch.equal(_resumed_run(torch.optim.SparseAdam, SparseAdam), straight)
    # `keep step as int`: the checkpoint's step is an int, as torch's own (from a float32 tensor
    # torch would compute its bias corrections in float32, 4e-6 away here)
    assert torch.equal(_resumed_run(SparseAdam, torch.optim.SparseAdam), straight)
    p = torch.zeros(2, 1, requires_grad=True)
    opt = SparseAdam([p])
    p.grad = torch.sparse_coo_tensor(torch.tensor([[1]]), torch.ones(1, 1), (2, 1), check_invariants=True)
    opt.step()
    assert type(opt.state_dict()["state"][0]["step"]) is int and torch.is_tensor(opt.state[p]["step"])


ADAGRAD_ROWS = """
optimizer AdagradRows "Adagrad's rule, at a sparse gradient's rows"
hyper lr  = 0.01
hyper eps = 1e-10
sparse rows
state sum = zeros
update {
  # torch's sparse path squares, then adds (its dense one is an addcmul: another rounding)
  sum   = sum + grad ^ 2
  param = param - lr * (grad / (sqrt(sum) + eps))
}
"""


@pytest.mark.parametrize("path", PATHS)
def test_a_user_spec_with_sparse_rows_matches_torch_adagrads_sparse_path(path, tmp_path):
    spec = tmp_path / "adagrad_rows.opt"
    spec.write_text(ADAGRAD_ROWS)
    cls = optdsl.load(spec)
    first, ours, opt = embedding_run(lambda ps: cls(ps, lr=0.1, **_path(path)), lambda ps: torch.optim.SGD(ps, lr=0.1))
    _, theirs, _ = embedding_run(lambda ps: torch.optim.Adagrad(ps, lr=0.1, eps=1e-10),
                                 lambda ps: torch.optim.SGD(ps, lr=0.1))
    for a, b in zip(ours, theirs):
        same = torch.equal(a, b) if path != "fused" else torch.allclose(a, b, rtol=1e-6, atol=1e-7)
        assert same, f"{(a - b).abs().max():.3e} from torch.optim.Adagrad's sparse path"
    # and a dense gradient runs the rule over the whole tensor
    (p,) = opt.param_groups[0]["params"]
    p.grad = torch.ones_like(p)
    before = opt.state[p]["sum"].clone()
    opt.step()
    assert torch.equal(opt.state[p]["sum"], before + 1)


REFUSED = [
    ("sparse rows\nstate m = empty\nupdate { m = grad\n param = param - 0.1 * m }",
     "state 'm' starts empty", 2, 7),
    ("sparse rows\nupdate { param = param - 0.1 * grad / norm(grad) }", "`norm(...)` reduces over the tensor", 2, 39),
    ("sparse rows\nupdate { param = param - 0.1 * grad / numel }", "`numel` reads the parameter's shape", 2, 39),
    ("sparse rows\nupdate { param = param - 0.1 * grad * size(0) }", "`size` reads the parameter's shape", 2, 39),
    ("sparse row\nupdate { param = param - grad }", "`sparse row`: a sparse gradient updates its touched `rows`", 1, 8),
    ("sparse rows please\nupdate { param = param - grad }", "`sparse rows please`: after `sparse rows` comes only",
     1, 13),
    ("sparse rows\nsparse rows\nupdate { param = param - grad }", "`sparse` is declared once", 2, 1),
]


@pytest.mark.parametrize("body,message,line,column", REFUSED, ids=[r[1][:30] for r in REFUSED])
def test_the_checker_refuses_what_would_differ_at_the_touched_rows(body, message, line, column):
    with pytest.raises(CompileError) as info:
        optdsl.compile_spec(f"optimizer Bad\n{body}\n", "bad.opt")
    found = [d for d in info.value.diagnostics if message in d.message]
    assert found, [d.message for d in info.value.diagnostics]
    assert (found[0].span.line, found[0].span.col) == (line + 1, column)


@pytest.mark.parametrize("path", PATHS)
def test_low_precision_states_are_gathered_and_scattered_with_their_rows(path):
    """bf16 states: the touched rows are updated in float32 working copies and written back; the
    untouched rows of the param and of each state stay as they were, and every path agrees."""
    def run(p):
        torch.manual_seed(0)
        emb = torch.nn.Embedding(10, 3, sparse=True)
        opt = SparseAdam([emb.weight], lr=0.1, state_dtype=torch.bfloat16, **_path(p))
        first = emb.weight.detach().clone()
        for k in range(3):
            opt.zero_grad()
            (emb(BATCHES[0]) ** 2).sum().backward()
            opt.step()
        return first, emb.weight.detach(), opt.state[emb.weight]
    first, weights, state = run(path)
    untouched = [0, 2, 3, 5, 6, 8, 9]
    assert state["exp_avg"].dtype == torch.bfloat16 and not state["exp_avg"][untouched].any()
    assert torch.equal(weights[untouched], first[untouched]) and not torch.equal(weights, first)
    _, loop_weights, loop_state = run("loop")
    assert torch.allclose(weights, loop_weights, rtol=1e-6, atol=1e-7)
    assert torch.equal(state["exp_avg_sq"], loop_state["exp_avg_sq"]) or path == "fused"


def test_the_sparse_benchmark_smoke_run_prints_a_ratio_for_every_contender(capsys):
    from optdsl.cli import main
    assert main(["bench", "--sparse", "--smoke"]) == 0
    out = capsys.readouterr().out
    for name in ("torch.optim.SparseAdam", "optdsl loop", "optdsl foreach", "optdsl cpu (fused C++)",
                 "torch.optim.Adam, dense"):
        assert name in out, out
    assert " 1.000" in out   # torch's own row, the base of the ratios

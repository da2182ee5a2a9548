"""optdsl.lbfgs.LBFGS against torch.optim.LBFGS: the same iterates bit for bit on both paths, the
same state_dict, and torch's behaviour (or a clear error) for bad input."""
import io

import pytest
import torch

from optdsl import verify_closure
from optdsl.lbfgs import LBFGS, STATE_KEYS


def test_both_paths_match_torch_bit_for_bit_over_the_whole_grid():
    rows = verify_closure.rows(full=True)
    assert len(rows) == 3 * len(verify_closure.combos())   # loop; foreach against torch and the loop path
    failed = [r for r in rows if not (r.ok and r.identical == r.total)]
    assert not failed, "\n".join(f"{r.path} {r.flags} against {r.against}: {r.max_abs:.3e} {r.error}"
                                 for r in failed)


def rosenbrock_run(cls, steps, **kw):
    params = [torch.tensor([-1.2, 1.0], dtype=torch.float64, requires_grad=True)]
    opt = cls(params, **kw)

    def closure():
        opt.zero_grad()
        x = params[0]
        loss = 100 * (x[1] - x[0] ** 2) ** 2 + (1 - x[0]) ** 2
        loss.backward()
        return loss
    for _ in range(steps):
        opt.step(closure)
    return params, opt, closure


def test_strong_wolfe_reaches_rosenbrocks_minimum():
    # tolerances below the defaults: with them, the loss's change stops the run 4e-5 from (1, 1)
    (x,), opt, _ = rosenbrock_run(LBFGS, 3, line_search_fn="strong_wolfe", foreach=True, tolerance_change=1e-15,
                                  tolerance_grad=1e-12)
    assert torch.allclose(x.detach(), torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-7)
    assert opt.state[x]["n_iter"] < 60


def _continue(opt, closure, params, steps):
    for _ in range(steps):
        opt.step(closure)
    return [p.detach().clone() for p in params]


@pytest.mark.parametrize("first,second", [(LBFGS, torch.optim.LBFGS), (torch.optim.LBFGS, LBFGS)],
                         ids=["ours_to_torch", "torch_to_ours"])
def test_a_checkpoint_cross_loads_mid_run_and_training_continues_bit_for_bit(first, second):
    kw = dict(line_search_fn="strong_wolfe", history_size=3, max_iter=4)
    straight, _, _ = rosenbrock_run(first, 4, **kw)
    params, opt, _ = rosenbrock_run(first, 2, **kw)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    resumed, opt2, closure = rosenbrock_run(second, 0, **kw)
    with torch.no_grad():
        resumed[0].copy_(params[0])
    opt2.load_state_dict(torch.load(buffer, weights_only=True))
    assert set(opt2.state[resumed[0]]) == STATE_KEYS
    assert torch.equal(_continue(opt2, closure, resumed, 2)[0], straight[0].detach())


def test_a_torch_checkpoint_keeps_this_optimizers_path():
    _, theirs, _ = rosenbrock_run(torch.optim.LBFGS, 1)
    params, ours, _ = rosenbrock_run(LBFGS, 0, foreach=True)
    ours.load_state_dict(theirs.state_dict())
    assert ours.param_groups[0]["foreach"] is True


def test_state_keys_and_types_are_torchs():
    _, ours, _ = rosenbrock_run(LBFGS, 2, line_search_fn="strong_wolfe")
    _, theirs, _ = rosenbrock_run(torch.optim.LBFGS, 2, line_search_fn="strong_wolfe")
    (sa,), (sb,) = ours.state_dict()["state"].values(), theirs.state_dict()["state"].values()
    assert set(sa) == set(sb) == STATE_KEYS
    assert {k: type(v) for k, v in sa.items()} == {k: type(v) for k, v in sb.items()}
    assert ours.state_dict()["param_groups"][0].keys() - theirs.state_dict()["param_groups"][0].keys() == {"foreach"}


@pytest.mark.parametrize("kwargs,error,match", [
    ({"lr": -1.0}, ValueError, "Invalid learning rate: -1.0"),
    ({"lr": torch.tensor([1.0, 2.0])}, ValueError, "Tensor lr must be 1-element"),
    ({"history_size": 0}, ValueError, "Invalid history_size: 0"),
    ({"max_iter": 2.5}, ValueError, "Invalid max_iter: 2.5"),
    ({"max_eval": 0}, ValueError, "Invalid max_eval: 0"),
    ({"tolerance_grad": -1e-7}, ValueError, "Invalid tolerance_grad"),
    ({"line_search_fn": "armijo"}, ValueError, "Invalid line_search_fn: 'armijo'; LBFGS has None or 'strong_wolfe'"),
    ({"fused": True}, ValueError, "LBFGS has no fused path"),
])
def test_bad_arguments_are_refused_by_name(kwargs, error, match):
    with pytest.raises(error, match=match.replace("[", r"\[").replace("(", r"\(")):
        LBFGS([torch.zeros(2, requires_grad=True)], **kwargs)


def test_two_param_groups_are_refused_with_torchs_message():
    groups = [{"params": [torch.zeros(2, requires_grad=True)]}, {"params": [torch.zeros(1, requires_grad=True)]}]
    for cls in (LBFGS, torch.optim.LBFGS):
        with pytest.raises(ValueError, match="doesn't support per-parameter options"):
            cls(groups)


def test_a_step_without_a_closure_says_what_the_closure_must_do():
    with pytest.raises(TypeError, match="needs a closure that zeroes the gradients"):
        LBFGS([torch.zeros(2, requires_grad=True)]).step()


def test_another_optimizers_state_dict_is_refused_before_anything_changes():
    p = torch.zeros(3, requires_grad=True)
    adam = torch.optim.Adam([p])
    p.grad = torch.ones(3)
    adam.step()
    ours = LBFGS([p])
    before = ours.state_dict()
    with pytest.raises(ValueError, match=r"has \['exp_avg', 'exp_avg_sq', 'step'\], which LBFGS does not keep"):
        ours.load_state_dict(adam.state_dict())
    assert ours.state_dict() == before


def _embedding_run(cls, **kw):
    torch.manual_seed(0)
    emb = torch.nn.Embedding(10, 3, sparse=True)
    head = torch.nn.Linear(3, 1)
    params = [emb.weight, *head.parameters()]
    opt = cls(params, **kw)
    idx = torch.tensor([1, 4, 4, 7])
    target = torch.tensor([[1.0], [-1.0], [-1.0], [0.5]])

    def closure():
        opt.zero_grad()
        loss = ((head(emb(idx)) - target) ** 2).mean()
        loss.backward()
        return loss
    for _ in range(3):
        opt.step(closure)
    return [p.detach() for p in params]


@pytest.mark.parametrize("foreach", [False, True])
def test_a_sparse_gradient_is_densified_as_torch_does(foreach):
    ours = _embedding_run(LBFGS, line_search_fn="strong_wolfe", foreach=foreach)
    theirs = _embedding_run(torch.optim.LBFGS, line_search_fn="strong_wolfe")
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))


def _complex_run(cls, **kw):
    z = torch.tensor([1.0 + 2.0j, -0.5 + 0.25j], requires_grad=True)
    r = torch.tensor([0.3, -0.7], requires_grad=True)
    opt = cls([z, r], **kw)
    target = torch.tensor([0.2 - 1.0j, 0.5 + 0.5j])

    def closure():
        opt.zero_grad()
        loss = (z - target).abs().pow(2).sum() + (r * r * z.real).sum() ** 2
        loss.backward()
        return loss
    for _ in range(2):
        opt.step(closure)
    return z.detach(), r.detach()


@pytest.mark.parametrize("foreach", [False, True])
def test_complex_parameters_step_as_torchs_real_views(foreach):
    ours = _complex_run(LBFGS, foreach=foreach, line_search_fn="strong_wolfe")
    theirs = _complex_run(torch.optim.LBFGS, line_search_fn="strong_wolfe")
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))


@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
def test_a_nan_gradient_does_what_torch_does(line_search_fn):
    def run(cls):
        p = torch.tensor([1.0, 2.0], requires_grad=True)
        opt = cls([p], line_search_fn=line_search_fn, max_iter=3)

        def closure():
            opt.zero_grad()
            loss = (p * p).sum() + (p[0] * float("nan") if opt.state[p].get("n_iter", 0) >= 1 else 0.0)
            loss.backward()
            return loss
        opt.step(closure)
        opt.step(closure)
        return p.detach(), {k: v for k, v in opt.state[p].items() if k in ("n_iter", "func_evals")}
    (a, sa), (b, sb) = run(LBFGS), run(torch.optim.LBFGS)
    assert torch.equal(a.isnan(), b.isnan()) and torch.allclose(a, b, equal_nan=True, rtol=0, atol=0)
    assert sa == sb


def test_a_tensor_lr_steps_as_torch_does():
    ours, _, _ = rosenbrock_run(LBFGS, 2, lr=torch.tensor([0.5], dtype=torch.float64))
    theirs, _, _ = rosenbrock_run(torch.optim.LBFGS, 2, lr=torch.tensor([0.5], dtype=torch.float64))
    assert torch.equal(ours[0], theirs[0])


def test_the_fuzzer_finds_no_mismatch_over_a_fixed_slice():
    from optdsl.fuzz import lbfgs as fuzz_lbfgs
    outcome = fuzz_lbfgs.fuzz(seed=0, count=60)
    assert outcome.cases == 60 and outcome.calls > 1000
    assert not outcome.failures, outcome.failures[0][2]


def test_the_fuzzer_finds_a_line_search_that_differs_from_torchs(monkeypatch):
    import optdsl.lbfgs
    from optdsl.fuzz import lbfgs as fuzz_lbfgs
    monkeypatch.setattr(optdsl.lbfgs, "WOLFE_C2", 0.5)   # a looser curvature condition than torch's 0.9
    assert fuzz_lbfgs.fuzz(seed=0, count=60).failures


def test_a_fuzz_case_replays_from_its_seed_and_number(capsys):
    from optdsl.fuzz import lbfgs as fuzz_lbfgs
    assert fuzz_lbfgs.main(["--seed", "0", "--case", "3"]) == 0
    out = capsys.readouterr().out
    assert "case 3 (seed 0)" in out and "0 mismatches" in out


def test_optdsl_fuzz_runs_the_lbfgs_mode(capsys):
    from optdsl.cli import main
    assert main(["fuzz", "--mode", "lbfgs", "--count", "3", "--no-progress"]) == 0
    assert "lbfgs: 3 cases" in capsys.readouterr().out


def test_optdsl_verify_lbfgs_prints_its_rows(capfd):
    from optdsl.cli import main
    assert main(["verify", "LBFGS", "--no-progress"]) == 0
    out = capfd.readouterr().out
    assert out.count("PASS") == 3 * len(verify_closure.plan(full=False)) and "(LBFGS," in out

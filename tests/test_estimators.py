"""optdsl.estimators: zeroth-order (SPSA / Gaussian two-point, MeZO-style) and forward gradients.

On a quadratic the two-point difference is exactly zᵀ∇L, so both estimators are unbiased and one
probe's variance per component is known in closed form (see the module's docstring):
    Rademacher: ‖∇L‖² - gᵢ²        Gaussian: ‖∇L‖² + gᵢ²
With N probes each component of the mean is within 5 standard deviations, sqrt(varᵢ / N), of the
true gradient (a chance of about 6e-7 per component to be outside, were the seeds not fixed), and
the squared error summed over the d components is within 4 times its expectation Σ varᵢ / N
(about 5e-4 for d = 6). The seeds are fixed: the test is deterministic."""
from __future__ import annotations

import pytest
import torch

from optdsl import optim
from optdsl.estimators import forward_gradient, spsa

N = 4000   # probes averaged in the statistical tests
A = torch.tensor([[3.0, 1.0, 0.0, 0.2], [1.0, 2.0, 0.5, 0.0], [0.0, 0.5, 1.0, 0.1], [0.2, 0.0, 0.1, 1.5]],
                 dtype=torch.float64)
B = torch.tensor([1.0, -2.0, 0.5, 0.3], dtype=torch.float64)


def _quadratic():
    """L(w, v) = ½ xᵀAx + bᵀx + ½‖v‖², x = w (4 entries), v a second tensor (2 entries)."""
    w = torch.tensor([0.3, -0.7, 1.2, 0.4], dtype=torch.float64, requires_grad=True)
    v = torch.tensor([[0.5], [-1.5]], dtype=torch.float64, requires_grad=True)

    def loss():
        return 0.5 * w @ A @ w + B @ w + 0.5 * (v * v).sum()
    true = [(A @ w.detach() + B), v.detach().clone()]
    return [w, v], loss, true


def _within_bounds(mean: list[torch.Tensor], true: list[torch.Tensor], gaussian: bool) -> None:
    m, g = torch.cat([x.reshape(-1) for x in mean]), torch.cat([x.reshape(-1) for x in true])
    var = (g @ g) + (g * g if gaussian else -g * g)
    sigma = (var / N).sqrt()
    assert torch.all((m - g).abs() <= 5 * sigma + 1e-12), ((m - g) / sigma).tolist()
    assert float(((m - g) ** 2).sum()) <= 4 * float(var.sum() / N)


@pytest.mark.parametrize("distribution", ["rademacher", "gaussian"])
def test_spsa_is_unbiased_on_a_quadratic_within_the_stated_bound(distribution):
    params, loss, true = _quadratic()
    total = [torch.zeros_like(p) for p in params]
    for seed in range(N):
        spsa(params, loss, eps=1e-2, seed=seed, distribution=distribution)
        for t, p in zip(total, params):
            t += p.grad
    _within_bounds([t / N for t in total], true, gaussian=distribution == "gaussian")


def test_forward_gradient_is_unbiased_on_a_quadratic_within_the_stated_bound():
    model = torch.nn.Module()
    params, _, true = _quadratic()
    model.w, model.v = torch.nn.Parameter(params[0].detach()), torch.nn.Parameter(params[1].detach())

    def loss():
        return 0.5 * model.w @ A @ model.w + B @ model.w + 0.5 * (model.v * model.v).sum()
    total = [torch.zeros_like(model.w), torch.zeros_like(model.v)]
    for seed in range(N):
        forward_gradient(model, loss, seed=seed)
        total[0] += model.w.grad
        total[1] += model.v.grad
    _within_bounds([t / N for t in total], true, gaussian=True)


def test_the_directions_come_again_from_the_seed():
    """Bit for bit where the params come back exactly (in place, their last bits move, and the
    difference quotient magnifies that)."""
    params, loss, _ = _quadratic()
    spsa(params, loss, seed=7, probes=8, restore="exact")
    first = [p.grad.clone() for p in params]
    spsa(params, loss, seed=7, probes=8, restore="exact")
    assert all(torch.equal(a, p.grad) for a, p in zip(first, params))
    spsa(params, loss, seed=8, probes=8, restore="exact")
    assert not all(torch.equal(a, p.grad) for a, p in zip(first, params))
    torch.manual_seed(5)
    spsa(params, loss, restore="exact")   # seed None: drawn from torch's generator
    drawn = [p.grad.clone() for p in params]
    torch.manual_seed(5)
    spsa(params, loss, restore="exact")
    assert all(torch.equal(a, p.grad) for a, p in zip(drawn, params))


def test_spsa_puts_the_params_back_in_place_or_exactly():
    params, loss, _ = _quadratic()
    before = [p.detach().clone() for p in params]
    spsa(params, loss, eps=0.1, seed=3, probes=4, restore="exact")
    assert all(torch.equal(p, b) for p, b in zip(params, before))
    spsa(params, loss, eps=0.1, seed=3, probes=4)   # in place: +εz - 2εz + εz, within rounding
    assert all(torch.allclose(p, b, rtol=0, atol=1e-15) for p, b in zip(params, before))


def test_the_closure_runs_without_a_graph_and_bad_arguments_are_refused():
    w = torch.ones(3, requires_grad=True)
    seen = []

    def loss():
        seen.append(torch.is_grad_enabled())
        return (w * w).sum()
    spsa([w], loss, seed=0)
    assert seen == [False, False] and w.grad.shape == w.shape
    for kwargs, message in (({"eps": 0}, "eps must be a positive"), ({"probes": 0}, "probes must be"),
                            ({"distribution": "uniform"}, "distribution must be"), ({"restore": "no"}, "restore")):
        with pytest.raises(ValueError, match=message):
            spsa([w], loss, **kwargs)
    with pytest.raises(ValueError, match="one number"):
        spsa([w], lambda: w * 2)
    with pytest.raises(ValueError, match="no parameters"):
        spsa([], loss)


def _diabetes():
    from sklearn.datasets import load_diabetes
    x, y = load_diabetes(return_X_y=True)
    x = torch.tensor(x, dtype=torch.float32)
    x = (x - x.mean(0)) / x.std(0)
    y = torch.tensor(y, dtype=torch.float32)
    return x, (y - y.mean()) / y.std()


@pytest.mark.parametrize("estimator", ["spsa", "forward_gradient"])
def test_a_shipped_spec_trains_on_the_estimate(estimator):
    """scikit-learn's diabetes regression (442 samples, 10 features; bundled, no download), a
    linear model, Adam stepping on the estimate: the loss falls well below its start."""
    x, y = _diabetes()
    torch.manual_seed(0)
    model = torch.nn.Linear(10, 1)
    opt = optim.Adam(model.parameters(), lr=0.05)

    def loss():
        return ((model(x).squeeze(1) - y) ** 2).mean()
    start = float(loss().detach())
    for step in range(300):
        if estimator == "spsa":
            spsa(model.parameters(), loss, eps=1e-3, probes=2, seed=step)
        else:
            forward_gradient(model, loss, probes=2, seed=step)
        opt.step()
    end = float(loss().detach())
    # least squares reaches about 0.48 of the variance here; from a random start the loss is ~1.3
    assert end < 0.6 and end < 0.5 * start, (start, end)

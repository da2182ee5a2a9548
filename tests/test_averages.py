"""Weight averaging: the Ema and Swa wrappers (specs/wrappers/) against
torch.optim.swa_utils.AveragedModel, and evaluating an average (optdsl/averages.py)."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from optdsl.optim import EmaAdamW, LookaheadAdam, SwaSGD


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 1))


def _batches(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, 5, generator=g), torch.randn(16, 1, generator=g)) for _ in range(n)]


def _train(model, opt, batches, averaged=None):
    for x, y in batches:
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        if averaged is not None:
            averaged.update_parameters(model)


@pytest.mark.parametrize("path", ["loop", "foreach", "fused"])
def test_ema_adamw_keeps_averaged_models_ema(path):
    """swa_utils' way: AdamW steps, then AveragedModel(get_ema_multi_avg_fn).update_parameters."""
    ours, theirs = _model(), _model()
    kw = {"fused": True} if path == "fused" else {"foreach": path == "foreach"}
    opt = EmaAdamW(ours.parameters(), lr=0.01, ema_decay=0.8, **kw)
    ref = torch.optim.AdamW(theirs.parameters(), lr=0.01, foreach=path == "foreach")
    averaged = AveragedModel(theirs, multi_avg_fn=get_ema_multi_avg_fn(0.8))
    batches = _batches(12)
    _train(ours, opt, batches)
    _train(theirs, ref, batches, averaged)
    exact = path != "fused"   # the fused kernel computes in its own order, to rounding
    evaluated = opt.averaged_model(ours, "ema")
    for p, q, e, avg in zip(ours.parameters(), theirs.parameters(), evaluated.parameters(), averaged.module.parameters()):
        for x, y in ((p, q), (opt.state[p]["ema"], avg), (e, avg)):
            if exact:
                assert torch.equal(x, y)
            else:
                torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)


def test_swa_sgd_averages_from_swa_start_every_swa_freq_steps():
    ours, theirs = _model(2), _model(2)
    opt = SwaSGD(ours.parameters(), lr=0.05, momentum=0.9, swa_start=3, swa_freq=2)
    ref = torch.optim.SGD(theirs.parameters(), lr=0.05, momentum=0.9)
    averaged = AveragedModel(theirs)   # the default average: the running mean
    for step, batch in enumerate(_batches(11), start=1):
        _train(ours, opt, [batch])
        _train(theirs, ref, [batch], averaged if step > 3 and (step - 3) % 2 == 0 else None)
    assert int(averaged.n_averaged) == 4
    for p, avg in zip(ours.parameters(), averaged.module.parameters()):
        assert torch.equal(opt.state[p]["swa"], avg)


def test_swapped_holds_the_average_inside_and_restores_exactly_also_after_an_error():
    model = _model(3)
    opt = EmaAdamW(model.parameters(), lr=0.05, ema_decay=0.5)
    _train(model, opt, _batches(5))
    before = [p.detach().clone() for p in model.parameters()]
    emas = [opt.state[p]["ema"].clone() for p in model.parameters()]
    with opt.swapped("ema"):
        assert all(torch.equal(p, e) for p, e in zip(model.parameters(), emas))
        assert all(torch.equal(opt.state[p]["ema"], b) for p, b in zip(model.parameters(), before))
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    with pytest.raises(RuntimeError, match="inside"):
        with opt.swapped("ema"):
            raise RuntimeError("inside")
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    assert all(torch.equal(opt.state[p]["ema"], e) for p, e in zip(model.parameters(), emas))
    # training continues from the model's own weights, not the average
    _train(model, opt, _batches(1, seed=4))
    assert not any(torch.equal(p, e) for p, e in zip(model.parameters(), emas))


def test_averaged_model_is_a_copy_and_any_weight_state_can_be_evaluated():
    model = _model(4)
    opt = LookaheadAdam(model.parameters(), lr=0.05, lookahead_k=2)
    _train(model, opt, _batches(3))
    before = copy.deepcopy(model.state_dict())
    slow = opt.averaged_model(model, "slow_params")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), before.values()))
    for p, s in zip(model.parameters(), slow.parameters()):
        assert torch.equal(s, opt.state[p]["slow_params"]) and s is not p
    with pytest.raises(KeyError, match="keeps no state 'ema'"):
        opt.averaged_model(model, "ema")
    with pytest.raises(ValueError, match="holds no weights"):
        with opt.swapped("step"):
            pass


def test_ema_checkpoint_round_trips_mid_run():
    a, b = _model(5), _model(5)
    opt_a = EmaAdamW(a.parameters(), lr=0.02, ema_decay=0.7)
    _train(a, opt_a, _batches(4))
    b.load_state_dict(a.state_dict())
    opt_b = EmaAdamW(b.parameters(), lr=0.02, ema_decay=0.7)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))
    more = _batches(4, seed=9)
    _train(a, opt_a, more)
    _train(b, opt_b, more)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q) and torch.equal(opt_a.state[p]["ema"], opt_b.state[q]["ema"])

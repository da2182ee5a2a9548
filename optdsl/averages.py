"""Evaluating a state that holds weights (the EMA or SWA average of specs/wrappers/ema.opt and
swa.opt, Lookahead's slow weights): swap it into the parameters for a while, or copy it into a
copy of the model, as torch.optim.swa_utils.AveragedModel gives a model to evaluate."""
from __future__ import annotations

import contextlib
import copy

import torch


class StateWeights:
    """Mixed into every generated optimizer (runtime.GeneratedOptimizer)."""

    def _weight_pairs(self, key: str):
        """(parameter, its state `key`) for every parameter that has one, which must be its shape."""
        known = {key for st in self.state.values() for key in st}
        if key not in known and key not in getattr(self, "_state_names", ()):
            raise KeyError(f"{type(self).__name__} keeps no state {key!r}; it keeps {sorted(known - {'step'})}")
        pairs = []
        for group in self.param_groups:
            for p in group["params"]:
                value = self.state.get(p, {}).get(key)
                if value is None:
                    continue
                if not isinstance(value, torch.Tensor) or value.shape != p.shape:
                    raise ValueError(f"state {key!r} is not a tensor of its parameter's shape: it holds no weights")
                pairs.append((p, value))
        return pairs

    @contextlib.contextmanager
    def swapped(self, key: str):
        """Inside, each parameter holds its state `key` (`with opt.swapped("ema"): evaluate(model)`),
        and that state the parameter's own values; both are back on leaving, also after an error.
        A parameter with no such state yet (never stepped) keeps its values."""
        pairs = self._weight_pairs(key)
        with torch.no_grad():
            for p, value in pairs:
                _swap(p, value)
        try:
            yield self
        finally:
            with torch.no_grad():
                for p, value in pairs:
                    _swap(p, value)

    def averaged_model(self, model: torch.nn.Module, key: str) -> torch.nn.Module:
        """A deep copy of `model` whose parameters optimized here hold their state `key` (as
        AveragedModel.module does; `torch.optim.swa_utils.update_bn(loader, copy)` then fits its
        batch-norm statistics). The model and the optimizer are not changed."""
        values = {id(p): value for p, value in self._weight_pairs(key)}
        out = copy.deepcopy(model)
        with torch.no_grad():
            for (name, mine), theirs in zip(model.named_parameters(), out.parameters()):
                if id(mine) in values:
                    theirs.copy_(values[id(mine)])
        return out


def _swap(p: torch.Tensor, value: torch.Tensor) -> None:
    held = p.detach().clone()
    p.copy_(value)
    value.copy_(held)

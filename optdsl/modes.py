"""optimizer.train() and optimizer.eval(), for a spec with `on train` / `on eval` blocks.

Schedule-Free keeps two sequences and the params hold one of them: y while training (the
gradient is taken there), x for evaluation. Switching is the spec's `on` block, run on each
tensor that has state, in every param group whose mode changes. As in schedulefree's optimizers, a
group records its mode under "train_mode" (so a checkpoint keeps it), and step() refuses to run
unless the first group is in train mode.

One difference, on purpose: a new optimizer starts in train mode, as a new nn.Module does, where
schedulefree's starts in eval mode so that step() fails until train() is called. Before the
first step both modes hold the same weights (x = y = z), so only that guard differs; starting in
train mode keeps the class a drop-in torch.optim.Optimizer for code that never calls train()
(LR schedulers, DDP, ZeroRedundancyOptimizer, which builds the optimizer itself). Code written
for schedulefree, which calls train() first, runs the same."""
from __future__ import annotations

import torch

from . import distributed, precision

# schedulefree's message, word for word (its step() raises a bare Exception; RuntimeError is one)
NOT_IN_TRAIN_MODE = ("Optimizer was not in train mode when step is called. Please insert .train() and .eval() "
                     "calls on the optimizer. See documentation for details.")


class ModeSwitches:
    """Mixed into a generated optimizer whose spec has modes (param groups start with
    "train_mode": True); the class provides
    `_switch(group, mode, params, lists)`, which runs the `on <mode>` block on those tensors."""

    @torch.no_grad()
    def train(self, mode: bool = True):
        """Put the params in training mode (the `on train` block); `train(False)` is `eval()`.
        Returns the optimizer, as nn.Module.train returns the module."""
        if not isinstance(mode, bool):   # nn.Module.train's check and message
            raise ValueError("training mode is expected to be boolean")
        for group in self.param_groups:
            if bool(group.get("train_mode", True)) != mode:
                self._switch_group(group, "train" if mode else "eval")
                group["train_mode"] = mode
        return self

    def eval(self):
        """Put the params in evaluation mode (the `on eval` block): call it before evaluating or
        saving a checkpoint, and `train()` before the next step."""
        return self.train(False)

    def step(self, closure=None):
        if self.param_groups and not self.param_groups[0].get("train_mode", True):
            raise RuntimeError(NOT_IN_TRAIN_MODE)
        return super().step(closure)

    def _switch_group(self, group, mode: str) -> None:
        active = self._active_states(group)
        params = [p for p in group["params"] if self.state.get(p)]   # a tensor never stepped has no state
        if not params:
            return
        lists = {name: [self.state[p].get(name) if name in active else None for p in params]
                 for name in self._state_names}
        work = precision.working_copies(group, params, [], lists, eager=True)   # a fused group too
        with distributed.partitioned(self._partitioned):
            if work is None:
                self._switch(group, mode, params, lists)
            else:
                self._switch(group, mode, work.params, work.lists)
                work.write_back()

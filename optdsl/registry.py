"""One registry of shipped optimizers drives `optdsl verify`, the benchmark and
every shared test (optax style): adding an optimizer is one spec file plus one
entry here.

Each entry names its trusted reference (CATALOG.md), the hyper/flag grid to
verify over, and how to build the reference for a given combination."""
from __future__ import annotations

import importlib
import importlib.util
import itertools
import sys
import types
from dataclasses import dataclass, field
from typing import Any, Callable

import torch


def timm_class(module: str, name: str):
    """timm.optim without running timm/__init__ (it needs torchvision, which has no CPU build here)."""
    spec = importlib.util.find_spec("timm")
    if spec is None:
        raise ImportError("timm is not installed (pip install --no-deps timm)")
    root = spec.submodule_search_locations[0]
    if "timm" not in sys.modules or not hasattr(sys.modules["timm"], "__path__"):
        t = types.ModuleType("timm")
        t.__path__ = [root]
        sys.modules["timm"] = t
    if "timm.optim" not in sys.modules:
        o = types.ModuleType("timm.optim")
        o.__path__ = [root + "/optim"]
        sys.modules["timm.optim"] = o
    return getattr(importlib.import_module(f"timm.optim.{module}"), name)


@dataclass(frozen=True)
class Entry:
    name: str                                        # class in optdsl.optim
    reference: Callable[..., torch.optim.Optimizer]  # reference(params, **combo) -> optimizer
    reference_name: str
    grid: dict[str, tuple] = field(default_factory=dict)
    base: dict[str, Any] = field(default_factory=dict)  # passed to both, every combination
    valid: Callable[[dict], bool] = lambda combo: True
    torch_class: type | None = None                  # a torch.optim class whose state_dict is interchangeable
    reference_foreach: bool = False                  # the reference takes foreach= (torch.optim classes)
    bench: bool = False                              # in the CPU benchmark's torch-equivalent table

    def combos(self) -> list[dict[str, Any]]:
        keys = list(self.grid)
        out = []
        for values in itertools.product(*(self.grid[k] for k in keys)):
            combo = dict(zip(keys, values))
            if self.valid(combo):
                out.append(combo)
        return out

    def make_reference(self, params, combo: dict, foreach: bool = False):
        kwargs = {**self.base, **combo}
        if self.reference_foreach:
            kwargs["foreach"] = foreach
        return self.reference(params, **kwargs)

    def make(self, params, combo: dict, path: str):
        from . import optim
        cls = getattr(optim, self.name)
        kwargs = {**self.base, **combo}
        if path == "foreach":
            kwargs["foreach"] = True
        elif path == "fused":
            kwargs["fused"] = True
        else:
            kwargs["foreach"] = False
        return cls(params, **kwargs)


def _lion_reference(params, maximize=False, **kw):
    import lion_pytorch
    if maximize:
        raise ValueError("lion_pytorch.Lion has no maximize")
    return lion_pytorch.Lion(params, **kw)


REGISTRY: dict[str, Entry] = {}


def register(entry: Entry) -> Entry:
    REGISTRY[entry.name] = entry
    return entry


register(Entry(
    "SGD", torch.optim.SGD, "torch.optim.SGD",
    grid={"momentum": (0.0, 0.9), "dampening": (0.0, 0.3), "nesterov": (False, True),
          "weight_decay": (0.0, 0.1), "maximize": (False, True)},
    base={"lr": 0.01},
    valid=lambda c: not c["nesterov"] or (c["momentum"] > 0 and c["dampening"] == 0),
    torch_class=torch.optim.SGD, reference_foreach=True, bench=True,
))
register(Entry(
    "Adam", torch.optim.Adam, "torch.optim.Adam",
    grid={"amsgrad": (False, True), "maximize": (False, True), "weight_decay": (0.0, 0.1),
          "decoupled_weight_decay": (False, True)},
    base={"lr": 0.01},
    torch_class=torch.optim.Adam, reference_foreach=True, bench=True,
))
register(Entry(
    "AdamW", torch.optim.AdamW, "torch.optim.AdamW",
    grid={"amsgrad": (False, True), "maximize": (False, True), "weight_decay": (0.0, 0.01)},
    base={"lr": 0.01},
    torch_class=torch.optim.AdamW, reference_foreach=True, bench=True,
))
register(Entry(
    "Lion", _lion_reference, "lion_pytorch.Lion",
    grid={"weight_decay": (0.0, 0.1), "betas": ((0.9, 0.99), (0.95, 0.98))},
    base={"lr": 1e-3},
))

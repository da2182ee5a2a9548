"""The shipped optimizers: `from optdsl.optim import Adam, SGD, AdamW, Lion, ..., LBFGS`.

Each is a generated module in generated/, imported on first use; LBFGS, which is not a spec, is
optdsl/lbfgs.py."""
from __future__ import annotations

from .loader import import_shipped, shipped


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    if name == "LBFGS":
        from .lbfgs import LBFGS
        return LBFGS
    cls = import_shipped(name)
    globals()[name] = cls
    return cls


def __dir__():
    return sorted([*shipped(), "LBFGS"])


__all__ = sorted([*shipped(), "LBFGS"])

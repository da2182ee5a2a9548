"""The shipped optimizers: `from optdsl.optim import Adam, SGD, AdamW, Lion, ...`.

Each is a generated module in generated/, imported on first use."""
from __future__ import annotations

from .loader import import_shipped, shipped


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    cls = import_shipped(name)
    globals()[name] = cls
    return cls


def __dir__():
    return sorted(shipped())


__all__ = sorted(shipped())

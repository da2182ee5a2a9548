"""Where the grammar, templates, specs and generated modules live.

From a wheel they are mapped inside the package (optdsl/grammars, ...); from a
source checkout they sit at the repository root beside optdsl/."""
from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    inside = _PACKAGE / name
    if inside.is_dir():
        return inside
    return _PACKAGE.parent / name


def data_path(*parts: str) -> Path:
    return data_dir(parts[0]).joinpath(*parts[1:])

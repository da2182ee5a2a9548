"""`optdsl.load(path_or_text)`: compile a spec and import the class it produces.

Cached by content hash, in memory and on disk (the kernel must live in a real
file for Triton), so a second load of the same text costs a dictionary lookup."""
from __future__ import annotations

import importlib.util
import os
import sys
import threading
from pathlib import Path

from .build import atomic_write
from .compiler import compile_spec, spec_hash
from .compose import Source, compose as compose_texts, expand, shipped_dirs
from .names import module_name
from .resources import data_dir

_LOADED: dict[str, type] = {}
_LOCK = threading.Lock()


def cache_dir() -> Path:
    root = os.environ.get("OPTDSL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "optdsl")
    return Path(root)


def _read(path_or_text) -> tuple[str, str, Path | None]:
    """(text, file name, the folder a composition in it finds its specs in)."""
    if isinstance(path_or_text, os.PathLike):
        p = Path(path_or_text)
        return p.read_text(encoding="utf-8"), p.name, p.resolve().parent
    if not isinstance(path_or_text, str):
        raise TypeError(f"optdsl.load takes a path or spec text, not {type(path_or_text).__name__}")
    text = path_or_text
    if "\n" not in text and "{" not in text and len(text) < 4096:
        p = Path(text)
        if p.suffix == ".opt" or p.exists():
            return p.read_text(encoding="utf-8"), p.name, p.resolve().parent
    return text, "<spec>", None


def import_module_file(name: str, path: Path):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def load(path_or_text) -> type:
    """The torch.optim.Optimizer subclass a spec defines. Raises CompileError on a bad spec."""
    text, file, base = _read(path_or_text)
    return _load_text(*expand(text, file, base))


def compose(wrapper, inner, name: str | None = None, doc: str | None = None) -> type:
    """The optimizer class of `wrapper` around `inner`: each a path, spec text, or the name of a
    shipped spec or wrapper (`optdsl.compose("lookahead", "my_rule.opt")`). `name` defaults to
    the two class names joined (LookaheadMyRule)."""
    text = compose_texts(_source(wrapper), _source(inner), name, doc)
    return _load_text(text, f"{module_name(name) if name else 'composed'}.opt")


def read_spec(ref) -> tuple[str, str, Path | None]:
    """(text, file name, folder) of a path, spec text, or the name of a shipped spec or wrapper."""
    if isinstance(ref, str) and ref.isidentifier():
        for folder in shipped_dirs():
            if (folder / f"{ref}.opt").is_file():
                return _read(folder / f"{ref}.opt")
    return _read(ref)


def _source(ref) -> Source:
    return Source(*read_spec(ref))


def _load_text(text: str, file: str) -> type:
    digest = spec_hash(text)
    with _LOCK:
        if digest in _LOADED:
            return _LOADED[digest]
        compiled = compile_spec(text, file)
        mod = module_name(compiled.program.name)
        folder = cache_dir() / digest[:32]
        eager, kernel = folder / f"{mod}.py", folder / f"{mod}_triton.py"
        files = [(eager, compiled.eager_source), (kernel, compiled.triton_source),
                 (folder / f"{mod}_cpu.py", compiled.cpu_source), (folder / f"{mod}_cpu.cpp", compiled.cpp_source)]
        for path, source in files:
            if not source:   # no kernel modules where the fused path is refused
                continue
            if not path.exists() or path.read_text(encoding="utf-8") != source:
                atomic_write(path, source)
        module = import_module_file(f"optdsl._loaded.{mod}_{digest[:12]}", eager)
        cls = getattr(module, compiled.program.name)
        _LOADED[digest] = cls
        return cls


def shipped() -> dict[str, str]:
    """Class name -> module name of every optimizer in generated/."""
    registry = import_module_file("optdsl.generated", data_dir("generated") / "__init__.py")
    return dict(registry.OPTIMIZERS)


def import_shipped(class_name: str) -> type:
    modules = shipped()
    if class_name not in modules:
        raise AttributeError(f"optdsl.optim has no optimizer {class_name!r}; shipped: {', '.join(sorted(modules))}")
    mod = modules[class_name]
    module = import_module_file(f"optdsl.generated.{mod}", data_dir("generated") / f"{mod}.py")
    return getattr(module, class_name)

"""optdsl: a compiler for optimizers. One `.opt` spec -> a torch.optim.Optimizer with
a per-tensor loop, a foreach path and a fused Triton kernel, checked against each
other and against trusted references."""
from .compiler import compile_spec
from .diagnostics import CompileError
from .loader import compose, load

__all__ = ["load", "compose", "compile_spec", "CompileError"]
__version__ = "0.1.0"

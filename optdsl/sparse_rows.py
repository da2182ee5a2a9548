"""`sparse rows`: a sparse (COO) gradient updates only the rows it touches, SparseAdam's semantics.

The gradient is coalesced (its indices unique, so each touched row is updated once). Its indices
pick the touched rows of the parameter and of each of its tensor states, and those rows are
gathered into compact tensors of shape (nnz, *dense dims). Every path then runs on them as on any
dense tensors, the fused kernels included, and the rows are scattered back. Nothing of the dense
size is made, and an untouched row is not read or written. A tensor whose gradient touches no
row is not updated at all; its step is still counted, as torch.optim.SparseAdam counts it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class Rows:
    """The compact lists one step runs on, and where their rows go back."""
    params: list[Tensor]
    grads: list[Tensor]
    lists: dict[str, list]
    steps: list[Tensor]
    # (full tensor, its compact rows, the rows' indices) for everything gathered
    _back: list[tuple[Tensor, Tensor, tuple]] = field(default_factory=list)

    def scatter(self) -> None:
        """Write the compact rows back into the parameters and states they came from."""
        for full, rows, index in self._back:
            full.index_put_(index, rows)


def gather(params: list[Tensor], grads: list[Tensor], lists: dict[str, list], steps: list[Tensor],
           step_per_tensor: bool) -> Rows:
    """The compact lists for a step in which some gradients are sparse (a dense one keeps its
    tensors as they are). A tensor state is gathered where it has the parameter's shape; a scalar
    state (one number per tensor) is passed as it is."""
    out = Rows([], [], {name: [] for name in lists}, [])
    for i, (p, g) in enumerate(zip(params, grads)):
        if not g.is_sparse:
            _keep(out, i, p, g, lists, steps)
            continue
        g = g.coalesce()
        if g.sparse_dim() == 0:   # no sparse dim: one dense block, the whole tensor
            _keep(out, i, p, g.to_dense(), lists, steps)
            continue
        index = tuple(g.indices())
        if g.values().shape[0] == 0:   # touches nothing: counted, not updated
            if step_per_tensor and steps:
                steps[i].add_(1)
            continue
        rows = p[index]
        out._back.append((p, rows, index))
        out.params.append(rows)
        out.grads.append(g.values())
        for name, column in lists.items():
            state = column[i]
            if isinstance(state, Tensor) and state.shape == p.shape:
                compact = state[index]
                out._back.append((state, compact, index))
                out.lists[name].append(compact)
            else:
                out.lists[name].append(state)
        if steps:
            out.steps.append(steps[i])
    return out


def _keep(out: Rows, i: int, p: Tensor, g: Tensor, lists: dict[str, list], steps: list[Tensor]) -> None:
    out.params.append(p)
    out.grads.append(g)
    for name, column in lists.items():
        out.lists[name].append(column[i])
    if steps:
        out.steps.append(steps[i])


def has_sparse(grads: list[Tensor]) -> bool:
    return any(g.is_sparse for g in grads)


def dense_refused(name: str, label: str) -> RuntimeError:
    """torch.optim.SparseAdam's error for a dense gradient, naming the parameter."""
    return RuntimeError(f"{name} does not support dense gradients: {label} has a dense gradient (its spec says "
                        "`sparse rows only`; for dense gradients use a spec without `only`, e.g. Adam)")

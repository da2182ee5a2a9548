"""What generated optimizers share at run time: the torch.optim-shaped base class
(lazy state, param groups, closures, state_dict checks) and IEEE-safe host math (in
optdsl/host_math.py, re-exported here).

Generated modules hold the math; this module holds the plumbing, once."""
from __future__ import annotations

import itertools
import math
import operator
from typing import Any, Callable

import torch
from torch import Tensor
from torch.optim.optimizer import Optimizer, _default_to_fused_or_foreach, _get_scalar_dtype

from . import distributed, host_facts, inputs, layouts, precision, sparse_rows
from .kernel_runtime import COMPLEX_DTYPES, SameRows
from .backends import (cpu_fused, cpu_fused_backend, fused_kernel_suffix, fused_target,  # noqa: F401
                       import_sibling)  # (generated code and tests read them as `_rt.`/`runtime.`)
from .averages import StateWeights
from .state_dicts import check_state_dict
from .matrix_ops import newton_schulz, no_host_matrix_op  # noqa: F401  (generated code: `_rt.`)
from .axis_ops import (axis_amax, axis_mean, axis_norm, axis_rms, axis_sum, cover_amax, cover_mean,  # noqa: F401
                       cover_min, cover_norm, cover_rms, cover_sum)  # (generated code: `_rt.`)
from .state_shapes import (PerTensor, channel_numel, cover_lists, dtype_eps, make_cover, new_shaped_state,  # noqa: F401
                           shape_input, size)
from .distributed import across_ranks, foreach_copy_, launch_on_shards  # noqa: F401  (generated code reads them as `_rt.`)
from .host_math import (  # noqa: F401 - generated code reads these as _rt.<name>
    compiling, _any_tensor, value, _like, sqrt, rsqrt, div, pow,
    exp, log, sign, sigmoid, tanh, softplus, log1p, expm1,
    cbrt, floor, mod, minimum, maximum, clamp, lerp, f32,
    where, both, either, negate,
)


# ---- in-place updates whose scale may be a device scalar ---------------------------------
#
# torch's `alpha=` / `value=` arguments are Python numbers. A 0-d CPU tensor passes as one
# (torch reads it); a device tensor would be read with a synchronising .item(), which a CUDA
# graph cannot capture. Where a scale may be a device tensor (capturable: step-dependent
# values, a Tensor lr), the generated code calls these, which fold the scale into a tensor
# operand instead. With numbers they are the plain torch call, bit for bit.


def device_scalar(s) -> bool:
    """A scale that must stay on its device: a non-CPU tensor outside torch.compile (which handles it itself)."""
    return isinstance(s, Tensor) and s.device.type != "cpu" and not compiling()


def _tensor_scales(scalars) -> bool:
    """Per-tensor scales that are tensors (capturable, or traced by torch.compile): a foreach
    call cannot take them as its scalar list (its Tensor form wants a CPU tensor, and fails on
    fake tensors), so they are folded into a tensor operand with _foreach_mul."""
    return isinstance(scalars, (list, tuple)) and _any_tensor(*scalars)


def add_(x: Tensor, y: Tensor, alpha) -> Tensor:
    """x += alpha * y"""
    if device_scalar(alpha):
        return x.add_(y * alpha)
    return x.add_(y, alpha=alpha)


def add(x: Tensor, y: Tensor, alpha) -> Tensor:
    """x + alpha * y"""
    if device_scalar(alpha):
        return torch.add(x, y * alpha)
    return torch.add(x, y, alpha=alpha)


def addcmul_(x: Tensor, y: Tensor, z: Tensor, value) -> Tensor:
    """x += value * y * z"""
    if device_scalar(value):
        return x.addcmul_(y * value, z)
    return x.addcmul_(y, z, value=value)


def addcdiv_(x: Tensor, y: Tensor, z: Tensor, value) -> Tensor:
    """x += value * y / z"""
    if device_scalar(value):
        return x.addcdiv_(y * value, z)
    return x.addcdiv_(y, z, value=value)


def foreach_add_(xs, ys, alpha) -> None:
    """xs += alpha * ys, alpha one number for the group"""
    if device_scalar(alpha):
        torch._foreach_add_(xs, torch._foreach_mul(ys, alpha))
    else:
        torch._foreach_add_(xs, ys, alpha=alpha)


def foreach_add_scaled_(xs, ys, alphas) -> None:
    """xs[i] += alphas[i] * ys[i], one number per tensor (ASGD's `param - eta * g`), rounded as the
    loop path's `add_(y, alpha=a)`: one foreach call where every tensor has the same number (the
    usual case: one step count for the group), else one add_ per tensor."""
    if _tensor_scales(alphas):
        torch._foreach_add_(xs, torch._foreach_mul(ys, list(alphas)))
    elif all(a == alphas[0] for a in alphas):
        torch._foreach_add_(xs, ys, alpha=alphas[0])
    else:
        for x, y, a in zip(xs, ys, alphas):
            x.add_(y, alpha=a)


def foreach_add_scaled(xs, ys, alphas):
    """xs[i] + alphas[i] * ys[i], rounded as the loop path's `torch.add(x, y, alpha=a)`."""
    if _tensor_scales(alphas):
        return torch._foreach_add(xs, torch._foreach_mul(ys, list(alphas)))
    if all(a == alphas[0] for a in alphas):
        return torch._foreach_add(xs, ys, alpha=alphas[0])
    return [torch.add(x, y, alpha=a) for x, y, a in zip(xs, ys, alphas)]


def foreach_add(xs, ys, alpha):
    if device_scalar(alpha):
        return torch._foreach_add(xs, torch._foreach_mul(ys, alpha))
    return torch._foreach_add(xs, ys, alpha=alpha)


def _foreach_addc(op, xs, ys, zs, value) -> None:
    if _tensor_scales(value) or device_scalar(value):
        op(xs, torch._foreach_mul(ys, value), zs)
    elif isinstance(value, (list, tuple)):
        op(xs, ys, zs, list(value))
    else:
        op(xs, ys, zs, value=value)


def foreach_addcmul_(xs, ys, zs, value) -> None:
    """xs += value * ys * zs; value one number, or one per tensor"""
    _foreach_addc(torch._foreach_addcmul_, xs, ys, zs, value)


def foreach_addcdiv_(xs, ys, zs, value) -> None:
    """xs += value * ys / zs; value one number, or one per tensor"""
    _foreach_addc(torch._foreach_addcdiv_, xs, ys, zs, value)


# ---- reductions ----------------------------------------------------------------------------
#
# The eager forms of the builtins table's reductions (optdsl.builtins.REDUCTIONS). A channel is
# an index along dim 0 (the output channel, as AdamP's `x.view(x.size(0), -1)`); a 0-d tensor is
# one channel. Per-channel results have shape (size(0), 1, ..., 1) and broadcast back.


def no_host_reduction():
    raise AssertionError("a reduction is never host math")


def _channels(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], math.prod(x.shape[1:])) if x.dim() else x.reshape(1, 1)


def _per_channel(r: Tensor, x: Tensor) -> Tensor:
    return r.reshape((-1,) + (1,) * (x.dim() - 1)) if x.dim() else r.reshape(())


def channel_sum(x: Tensor) -> Tensor:
    return _per_channel(_channels(x).sum(dim=1), x)


def channel_mean(x: Tensor) -> Tensor:
    return _per_channel(_channels(x).mean(dim=1), x)


def channel_norm(x: Tensor) -> Tensor:
    return _per_channel(torch.linalg.vector_norm(_channels(x), dim=1), x)


def channel_rms(x: Tensor) -> Tensor:
    c = _channels(x)
    return _per_channel(torch.linalg.vector_norm(c, dim=1) / sqrt(c.shape[1]), x)


def channel_amax(x: Tensor) -> Tensor:
    c = _channels(x)
    if c.numel() == 0:   # no elements per channel: 0, as amax of an empty tensor
        return _per_channel(c.new_zeros(c.shape[0]), x)
    return _per_channel(torch.linalg.vector_norm(c, float("inf"), dim=1), x)


def amax(x: Tensor) -> Tensor:
    """max |x|: torch.linalg.vector_norm(x, inf), and 0 for no elements (where torch raises)."""
    if distributed.is_dtensor(x):
        return distributed.dtensor_amax(x)
    return torch.linalg.vector_norm(x, float("inf")) if x.numel() else x.new_zeros(())


def group_numel(params: list[Tensor]) -> int:
    """Elements of a param group, as the update sees them (complex parameters as real views)."""
    return sum(shape_input(params, "numel"))


def group_parts(parts: list, params: list[Tensor]) -> list[Tensor]:
    """The loop path's per-tensor parts of a group reduction: 0 (every fold's identity) for a tensor
    that did not reach the reduction (under a per-tensor `if`)."""
    return [torch.zeros((), dtype=_real_dtype(p), device=p.device) if x is None else x for x, p in zip(parts, params)]


def _real_dtype(p: Tensor):
    return p.real.dtype if torch.is_complex(p) else p.dtype


def rms(x: Tensor) -> Tensor:
    """sqrt(mean(x * x)) as the L2 norm over sqrt(numel) (Adafactor's `_rms`); NaN for no elements, as mean."""
    return torch.linalg.vector_norm(x) / sqrt(x.numel()) if x.numel() else torch.mean(x)


def on_device(x) -> Tensor:
    """A host number or boolean as a 0-d tensor, where a local is a reduction's value on one path
    and a host value on another (`c = false; if ndim > 1 { c = norm(g) > 1 }`)."""
    if isinstance(x, Tensor):
        return x
    return torch.tensor(x, dtype=torch.bool if isinstance(x, bool) else torch.float32)


def as_dtype(x, like: Tensor):
    """x in like's dtype, where torch wants one dtype (lerp): a reduction of a bf16 tensor beside a
    float32 scalar state (exact: an upcast)."""
    return x.to(like.dtype) if isinstance(x, Tensor) and x.dtype != like.dtype else x


def lerp_(d: Tensor, end, weight) -> Tensor:
    """d.lerp_(end, weight) with end in d's dtype."""
    return d.lerp_(as_dtype(end, d), weight)


def lerp_small(a, b, w):
    """torch.lerp between per-tensor values of possibly different dtypes (in the wider one)."""
    if not isinstance(a, Tensor):
        a = torch.as_tensor(a, dtype=b.dtype if isinstance(b, Tensor) else torch.float32)
    b = torch.as_tensor(b, dtype=a.dtype) if not isinstance(b, Tensor) else b
    dtype = torch.promote_types(a.dtype, b.dtype)
    return torch.lerp(a.to(dtype), b.to(dtype), as_dtype(w, a.to(dtype)))


def expand(x, like: Tensor) -> Tensor:
    """A reduction's operand that is not elementwise (a number, a per-tensor or per-channel value),
    as a tensor of `like`'s shape: `sum(1)` is the element count."""
    if isinstance(x, Tensor):
        return x.expand_as(like)
    return torch.full_like(like, x)


def small(x, like: Tensor) -> Tensor:
    """A host number as a 0-d tensor beside a per-tensor device value `like` (its dtype and device)."""
    if isinstance(x, Tensor):
        return x
    if isinstance(x, bool):
        return torch.full((), x, dtype=torch.bool, device=like.device)
    dtype = like.dtype if like.is_floating_point() else torch.float32   # beside a boolean: a number
    return torch.full((), x, dtype=dtype, device=like.device)


# ---- tensors -----------------------------------------------------------------------------


def new_state(t: Tensor, p: Tensor, *, fresh: bool = False) -> Tensor:
    """An `empty` state's first value, in its param's dtype as the fused path allocates it: a value
    computed in another dtype (a float32 group reduction over a bfloat16 param) is rounded. Its own
    memory: copied unless `fresh` (a value this step just computed, aliasing nothing)."""
    return t.detach().to(dtype=p.dtype, copy=not fresh)


def like_param(t: Tensor, p: Tensor) -> Tensor:
    """State created from a value computed on a complex param's real view is stored complex, as torch stores it."""
    return torch.view_as_complex(t) if torch.is_complex(p) and not torch.is_complex(t) else t


def real_views(*tensors):
    return tuple(torch.view_as_real(t) if t is not None and torch.is_complex(t) else t for t in tensors)


def real_view_lists(*lists):
    return [[torch.view_as_real(t) if t is not None and torch.is_complex(t) else t for t in ts] for ts in lists]


def per_tensor(fn: Callable, inputs: list[list], kwargs: dict, n: int) -> list[tuple]:
    """fn(*row, **kwargs) for each tensor; tensors sharing inputs (the usual case: one step) share one call.
    Rows holding tensors (capturable steps, values traced by torch.compile) are computed one by one."""
    if not inputs:
        return SameRows(itertools.repeat(fn(**kwargs), n))
    firsts = [column[0] for column in inputs]
    if not _any_tensor(*firsts) and all(column.count(column[0]) == n for column in inputs):
        # the usual case: every tensor at the same step
        return SameRows(itertools.repeat(fn(*firsts, **kwargs), n))
    memo: dict[tuple, tuple] = {}
    out = []
    for row in zip(*inputs):
        if _any_tensor(*row):
            out.append(fn(*row, **kwargs))
            continue
        if row not in memo:
            memo[row] = fn(*row, **kwargs)
        out.append(memo[row])
    return out


_item = Tensor.item
_GRAD = operator.attrgetter("grad")
_IS_SPARSE = operator.attrgetter("is_sparse")
_DTYPE = operator.attrgetter("dtype")


def host_values(tensors: list[Tensor], capturable: bool, offset: float = 0.0) -> list:
    """What the host math reads from 0-d state tensors (steps, scalar states): the tensors
    themselves when capturable (the math stays on the device) or while torch.compile traces;
    else Python numbers, fetched in one transfer when they live on one device that is not the
    CPU (a state_dict loaded into a fused group puts steps there, as torch.optim does)."""
    if any(t is None for t in tensors):   # a conditional scalar state its group does not keep
        return [None if t is None else host_values([t], capturable, offset)[0] for t in tensors]
    if capturable or compiling():
        return [t + offset for t in tensors] if offset else list(tensors)
    if tensors and tensors[0].device.type != "cpu" and all(t.device == tensors[0].device for t in tensors):
        return [v + offset for v in torch.stack(tensors).tolist()]
    if not offset:   # (on the CPU .item() per tensor is faster than torch.stack of thousands of 0-d tensors)
        return list(map(_item, tensors))
    return [t.item() + offset for t in tensors]


def launch_helper(params: list[Tensor]) -> bool:
    """Whether a fused step over `params` (one device type) uses the C++ launch helper (optdsl.host_facts)."""
    device = params[0].device.type
    return host_facts.available(device, cpu_fused_backend() if device == "cpu" else "triton")


def advance_steps(state_steps: list[Tensor], params: list[Tensor], capturable: bool) -> list:
    """The fused path's `step += 1` on every tensor, and the new steps as its host math reads them
    (host_values): `torch._foreach_add_` then a read, or one C++ pass doing both where the steps
    are CPU numbers and the launch helper is available (optdsl.host_facts; bit for bit the same)."""
    if not capturable and not compiling() and launch_helper(params):
        values = host_facts.advance_steps(state_steps)
        if values is not None:
            return values
    torch._foreach_add_(state_steps, 1)
    return host_values(state_steps, capturable)


def check_capturable(params: list[Tensor], state_steps: list[Tensor], supports_xla: bool,
                     scalar_states: dict[str, list[Tensor]] | None = None) -> None:
    """torch.optim's check, with its wording: params, steps and scalar states (NAdam's
    mu_products, ASGD's mus and etas) on one device of a kind that supports capturable (the
    list is torch's own, read at call time)."""
    if compiling():
        return
    from torch.optim import optimizer as _optimizer
    devices = _optimizer._get_capturable_supported_devices(supports_xla=supports_xla)
    scalar_states = scalar_states or {}
    columns = [params, *scalar_states.values(), state_steps]
    # None: a conditional scalar state the group does not keep
    kinds = [{t.device.type for t in row if t is not None} for row in zip(*columns)]
    ok = all(len(k) == 1 and next(iter(k)) in devices for k in kinds)
    if not ok:
        names = ["params", *scalar_states, "state_steps"]
        listed = " and ".join(names) if len(names) == 2 else ", ".join(names[:-1]) + ", and " + names[-1]
        raise AssertionError(f"If capturable=True, {listed} must be on supported devices: {devices}.")


def check_tensor_lr(lr, foreach, capturable, per_tensor_lr: bool) -> None:
    """torch.optim's checks on a Tensor lr, in torch.optim.Adam's order and words. torch.optim.Adam
    and AdamW refuse a Tensor lr with foreach=True unless capturable: their foreach path takes
    the per-tensor step sizes `lr / bias_correction1` as a list of numbers. The generated rule is
    structural -- refuse where the foreach path folds lr into a per-tensor host value
    (`per_tensor_lr`, decided by the emitter) -- so it also refuses Adagrad, Adamax and NAdam,
    which torch accepts (a known difference; the foreach helpers below could take it)."""
    if not isinstance(lr, Tensor):
        return
    if foreach and not capturable and per_tensor_lr:
        raise ValueError("lr as a Tensor is not supported for capturable=False and foreach=True")
    if lr.numel() != 1:
        raise ValueError("Tensor lr must be 1-element")


def check_tuple_length(name: str, value, n: int) -> None:
    """A tuple hyper has exactly the entries the spec declares: a shorter one would fail later
    with a bare IndexError, a longer one would be silently half-used."""
    try:
        got = len(value)
    except TypeError:
        raise ValueError(f"Invalid {name} value: expected a tuple of {n} numbers, got {value}") from None
    if got != n:
        raise ValueError(f"Invalid {name} value: expected a tuple of {n} numbers, got {got}: {value}")


def to_scalar(x):
    """torch.optim's `_to_scalar`: a 1-element tensor hyper becomes 0-d."""
    return x.squeeze() if isinstance(x, Tensor) and x.dim() != 0 else x


def uniform(values: list) -> bool:
    return all(v == values[0] for v in values)


def column(rows: list[tuple], j: int) -> list:
    return [r[j] for r in rows]


# ---- the optimizer base class ----------------------------------------------------------------


class GeneratedOptimizer(StateWeights, Optimizer):
    """torch.optim.Optimizer plus the bookkeeping every generated optimizer shares.

    A generated subclass provides `_active_states(group)` (name -> initial value
    kind), `_state_names`, `_empty_states`, `_uses_step` and `_update(...)`."""

    _state_names: tuple[str, ...] = ()
    _empty_states: frozenset[str] = frozenset()
    _uses_step: bool = True
    _supports_complex: bool = True
    _sparse_rows = False     # `sparse rows`: a sparse gradient updates its touched rows (optdsl/sparse_rows.py)
    _dense_refused = False   # `sparse rows only`: a dense gradient is an error
    _step_as_int = False     # `keep step as int`: state_dict() saves each tensor's step as an int
    _state_shapes: dict[str, str] = {}   # state key -> "row", "column" or "cover" (one accumulator per dim)
    _dtensor_refused: str = ""   # why a DTensor shard cannot be stepped on its own (generated; "" where it can)
    # `keep step per group`: one step count per param group, group["step"] (a 0-d tensor, as a per-tensor
    # step is), incremented once per `step()` call, whether or not the group's params have gradients
    _step_per_group: bool = False
    _inputs: dict = {}   # a spec's `input`s: state key -> (estimator, its settings' param_group keys)
    _has_group_update = False   # a spec with group states (`state x : group`) defines _group_update(group)
    # the update reads `initial_lr`: group["initial_lr"], set to the group's lr when the group is added
    # unless it is there already (torch's LR schedulers set the same key the same way)
    _reads_initial_lr: bool = False

    _partitioned = False   # (Optimizer.__getstate__ keeps only defaults, state and groups)

    def __init__(self, params, defaults: dict[str, Any], partitioned: bool = False):
        if defaults.get("fused") and defaults.get("foreach"):
            raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
        precision.check_options(type(self).__name__, defaults.get("state_dtype"),
                                defaults.get("stochastic_rounding", False), defaults.get("rounding_seed", 0))
        super().__init__(params, defaults)
        # Not a group default: a state_dict saved under ZeRO must load into a single-process
        # optimizer that does not all-reduce (ZeRO copies the key into its groups; it is not read).
        self._partitioned = bool(partitioned)
        if self._partitioned:
            distributed.check_partition(self)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        if hasattr(self, "_check_params"):   # the spec's `require`s on the param's shape
            try:
                self._check_params(self.param_groups[-1])
            except ValueError:
                self.param_groups.pop()   # a refused group is not kept
                raise
        if self._reads_initial_lr:
            group = self.param_groups[-1]
            lr = group["lr"]
            group.setdefault("initial_lr", lr.clone() if isinstance(lr, Tensor) else lr)

    def _group_step(self, group) -> Tensor | None:
        """group["step"] as a 0-d tensor where this group's steps live (the first param's device when
        capturable, else the CPU), made on the group's first step; None for a group without params.
        A plain number (a checkpoint of a library that counts steps per group in an int) is converted."""
        if not group["params"]:
            return None
        p = group["params"][0]
        step = group.get("step")
        if not isinstance(step, Tensor):
            step = group["step"] = self._new_step(float(step or 0.0), p, group)
        device = p.device if self._on_device(group) else torch.device("cpu")
        if step.device != device:
            step = group["step"] = step.to(device)
        return step

    def __setstate__(self, state):
        super().__setstate__(state)
        for group in self.param_groups:
            for key, value in self.defaults.items():
                group.setdefault(key, value)
            if not self._uses_step or self._step_per_group:
                continue
            for p in group["params"]:   # a pickled checkpoint from an old torch keeps `step` as a number
                p_state = self.state.get(p, {})
                if len(p_state) != 0 and "step" in p_state and not torch.is_tensor(p_state["step"]):
                    p_state["step"] = self._new_step(float(p_state["step"]), p, group)

    def _active_states(self, group) -> dict[str, Any]:
        raise NotImplementedError

    @staticmethod
    def _on_device(group) -> bool:
        """Where torch.optim keeps `step` and scalar states on the parameter's device: capturable."""
        return bool(group.get("capturable"))

    def _new_step(self, value: float, p: Tensor, group) -> Tensor:
        if self._on_device(group):
            return torch.full((), value, dtype=_get_scalar_dtype(is_fused=group.get("fused")), device=p.device)
        return torch.tensor(value, dtype=_get_scalar_dtype())

    def _new_state(self, kind, p: Tensor, group, name: str = "") -> Tensor | None:
        dtype = precision.state_dtype_of(p, group)
        if name in self._state_shapes:   # one value per row or per column, or one accumulator per dim
            return new_shaped_state(kind, p, self._state_shapes[name], dtype)
        if kind == "zeros":
            return torch.zeros_like(p, dtype=dtype, memory_format=torch.preserve_format)
        if kind == "empty":
            return None
        what, fill = kind
        if what == "fill":
            if isinstance(fill, Tensor):   # a hyper given as a Tensor (Rprop's step_size = lr): copied, never read back
                out = torch.empty_like(p, dtype=dtype, memory_format=torch.preserve_format)
                (torch.view_as_real(out) if torch.is_complex(p) else out).copy_(fill.detach().reshape(()))
                return out
            # a complex parameter is optimized as its real view: every real component starts at
            # `fill` (torch.optim: `complex(initial_accumulator_value, initial_accumulator_value)`)
            value = complex(fill, fill) if torch.is_complex(p) else fill
            return torch.full_like(p, value, dtype=dtype, memory_format=torch.preserve_format)
        # ("scalar", value): one number per parameter, on its device when capturable (as torch's NAdam
        # mu_product); ("device_scalar", value), stored from a reduction: always on its device
        device = p.device if self._on_device(group) or what == "device_scalar" else torch.device("cpu")
        if isinstance(fill, Tensor):
            out = fill.detach().reshape(()).to(device=device, dtype=_get_scalar_dtype(), copy=True)
        else:
            out = torch.full((), float(fill), dtype=_get_scalar_dtype(), device=device)
        return distributed.replicated_like(out, p) if what == "device_scalar" else out

    def _param_label(self, group, i: int) -> str:
        g = next(k for k, own in enumerate(self.param_groups) if own is group)
        names = group.get("param_names")
        name = f" {names[i]!r}" if names and i < len(names) else ""
        return f"parameter{name} (param_groups[{g}]['params'][{i}], shape {tuple(group['params'][i].shape)})"

    def _init_group(self, group, params, grads, state_steps, *state_lists) -> bool:
        """Lazy state init, torch.optim's shape: fills `params`, `grads`, `state_steps` and one list
        per name in `_state_names` (None where a state is off), returns whether a param is complex.
        Under torch.compile, dynamo runs this eagerly (it recognises `_init_group`), so it may do
        anything Python can."""
        active = self._active_states(group)
        group_step = self._group_step(group) if self._uses_step and self._step_per_group else None
        known = self._known_group(group, active, params, grads, state_steps, state_lists) if group_step is None else None
        if known is not None:
            return known
        has_complex = False
        for i, p in enumerate(group["params"]):
            if p.grad is None:
                continue
            if p.grad.is_sparse and not self._sparse_rows:
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients: "
                                   f"{self._param_label(group, i)} has a sparse gradient")
            if self._dense_refused and not p.grad.is_sparse:
                raise sparse_rows.dense_refused(type(self).__name__, self._param_label(group, i))
            if self._dtensor_refused and hasattr(p, "placements"):
                raise RuntimeError(f"{type(self).__name__} does not support DTensor (FSDP2) params yet: "
                                   f"{self._dtensor_refused} ({self._param_label(group, i)})")
            if torch.is_complex(p):
                if not self._supports_complex:
                    raise RuntimeError(f"{type(self).__name__} does not support complex parameters: "
                                       f"{self._param_label(group, i)} is {p.dtype}")
                has_complex = True
            params.append(p)
            grads.append(p.grad)
            state = self.state[p]
            if self._uses_step and group_step is None and "step" not in state:
                state["step"] = self._new_step(0.0, p, group)
            for name, out in zip(self._state_names, state_lists):
                kind = active.get(name)
                if isinstance(kind, PerTensor):   # kept where this tensor's shape says so
                    kind = kind.init if kind.kept_by(p) else None
                if self._state_shapes.get(name) == "cover":   # its list: step() reads it from self.state
                    new = None if kind is None else lambda: self._new_state(kind, p, group, name)
                    out.append(make_cover(state, name, p, new))
                    continue
                if kind is not None and name not in state:
                    init = self._new_state(kind, p, group, name)
                    if init is not None:
                        state[name] = init
                out.append(state.get(name) if kind is not None else None)
            if group_step is not None:
                # the group's count so far, per tensor: the update adds 1 to each, as to a per-tensor
                # step, and step() adds 1 to the group's own once
                state_steps.append(group_step.clone())
            elif self._uses_step:
                state_steps.append(state["step"])
        return has_complex

    def _known_group(self, group, active, params, grads, state_steps, state_lists) -> bool | None:
        """_init_group's usual case in C-level passes, no Python loop over the parameters: every
        parameter has a dense gradient (complex only where supported) and every state it needs
        already. Fills the lists and returns has_complex; returns None, having filled nothing,
        where the per-parameter loop must look (a missing grad, a sparse one, a state to create)."""
        ps = group["params"]
        read = host_facts.group_grads(ps) if ps and group.get("fused") and launch_helper(ps) else None
        if read is not None:   # one C++ pass (optdsl.host_facts)
            gs, has_complex = read
        else:
            gs = list(map(_GRAD, ps))
            if not all(map(operator.is_not, gs, itertools.repeat(None))) or any(map(_IS_SPARSE, gs)) \
                    or self._dense_refused:
                return None
            has_complex = not COMPLEX_DTYPES.isdisjoint(set(map(_DTYPE, ps)))
        refused = self._dtensor_refused and any(hasattr(p, "placements") for p in ps)   # a DTensor shard
        if (has_complex and not self._supports_complex) or refused:
            return None   # the loop raises the error
        states = list(map(self.state.__getitem__, ps))
        try:
            steps = list(map(operator.itemgetter("step"), states)) if self._uses_step else []
            # a state kept where a tensor's shape says: missing there (KeyError) until it is made
            columns = [[s[name] if active[name].kept_by(p) else None for s, p in zip(states, ps)]
                       if isinstance(active.get(name), PerTensor)
                       else list(map(operator.itemgetter(name), states)) if name in active else [None] * len(ps)
                       for name in self._state_names]
        except KeyError:   # a state not created yet (or an `empty` one still empty): the loop decides
            return None
        params.extend(ps)
        grads.extend(gs)
        state_steps.extend(steps)
        for out, column in zip(state_lists, columns):
            out.extend(column)
        return has_complex

    @torch.no_grad()
    def step(self, closure=None):
        """One optimization step; `closure` re-evaluates the model and returns the loss."""
        self._accelerator_graph_capture_health_check()
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self._inputs:   # a spec's `input`s, for every group at once (optdsl.inputs)
            inputs.estimate(self)
        for group in self.param_groups:
            params: list[Tensor] = []
            grads: list[Tensor] = []
            steps: list[Tensor] = []
            state_lists: list[list] = [[] for _ in self._state_names]
            self._init_group(group, params, grads, steps, *state_lists)
            if self._uses_step and self._step_per_group and group["params"]:
                self._group_step(group).add_(1)
            if self._has_group_update and group["params"]:   # every step() call, grads or not
                self._group_update(group)
            if not params:
                continue
            lists = dict(zip(self._state_names, state_lists))
            for name in self._state_shapes:   # a cover's accumulators, read here where torch.compile can trace them
                if self._state_shapes[name] == "cover":
                    lists[name] = cover_lists(self.state, name, params, lists[name])
            rows = None
            if self._sparse_rows and sparse_rows.has_sparse(grads):   # the touched rows, gathered
                rows = sparse_rows.gather(params, grads, lists, steps, self._uses_step and not self._step_per_group)
                params, grads, lists, steps = rows.params, rows.grads, rows.lists, rows.steps
                if not params:
                    continue
            before = {name: list(lists[name]) for name in self._empty_states}
            in_kernel = bool(group.get("fused")) and bool(group.get("stochastic_rounding")) and \
                fused_kernel_suffix(params) == "_triton"   # rounds in its stores
            work = precision.working_copies(group, params, grads, lists, in_kernel)
            with distributed.partitioned(self._partitioned), precision.kernel_rounding(work):
                if work is None:
                    self._update(group, params, grads, lists, steps)
                else:
                    self._update(group, work.params, work.grads, work.lists, steps)
                    work.write_back()
            if rows is not None:
                rows.scatter()
            for name in self._empty_states:   # states created by this step (C-level: found without a loop)
                after = lists[name]
                for i in itertools.compress(range(len(after)), map(operator.is_not, after, before[name])):
                    if after[i] is not None:
                        self.state[params[i]][name] = after[i].to(precision.state_dtype_of(params[i], group))
        return loss

    def _update(self, group, params, grads, lists, steps) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        out = super().state_dict()
        if self._step_as_int:   # the reference's convention; loading converts it back (__setstate__)
            out["state"] = {k: {**v, "step": int(v["step"])} if torch.is_tensor(v.get("step")) else v
                            for k, v in out["state"].items()}
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if layouts.is_lookahead(state_dict):   # pytorch_optimizer.Lookahead's nested layout
            state_dict = layouts.from_lookahead(self, state_dict)
        check_state_dict(self, state_dict)
        own_initial = [g.get("initial_lr") for g in self.param_groups]
        super().load_state_dict(state_dict)
        # torch.optim casts floating state to its param's dtype on load; a state_dtype state goes back
        # to it (exactly: the saved values are in that dtype)
        for group in self.param_groups:
            if group.get("state_dtype") is None:
                continue
            for p in group["params"]:
                for name, t in self.state.get(p, {}).items():
                    if name in self._state_names and torch.is_tensor(t) and t.shape == p.shape:
                        self.state[p][name] = t.to(precision.state_dtype_of(p, group))
        if self._reads_initial_lr:   # a state_dict saved without it keeps this optimizer's own
            for group, initial in zip(self.param_groups, own_initial):
                if "initial_lr" not in group and initial is not None:
                    group["initial_lr"] = initial


def default_foreach(params: list[Tensor], foreach, fused) -> tuple[bool, bool]:
    if foreach is None and fused is None:
        fused, foreach = _default_to_fused_or_foreach(params, differentiable=False, use_fused=False)
        return bool(foreach), False
    return bool(foreach), bool(fused)

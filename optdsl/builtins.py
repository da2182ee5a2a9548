"""The one table of operations: for each Op, its spec-level name and arity and
its form in every backend. Emitters look forms up here and never decide math.

Columns:
  host    -- Python float math (hypers, step, bias corrections), IEEE-safe helpers
             from optdsl.runtime where plain Python would raise or go complex;
  torch   -- an out-of-place torch expression on tensors;
  foreach -- the torch._foreach_* op on tensor lists (None: per-tensor fallback);
  triton  -- a Triton expression on fp32 blocks;
  numpy   -- float64 NumPy, for the IR interpreter (the semantic oracle);
  cpp     -- a C++ expression on fp32 scalars (`float`/`bool`), the fused CPU backend's: IEEE
             float ops only (no fast-math), helpers (`_pow`, `_lerp`, ...) from templates/cpu.cpp.jinja.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .ir import REDUCE, Op


@dataclass(frozen=True)
class Form:
    host: str
    torch: str
    foreach: str | None
    triton: str
    numpy: str
    cpp: str


OPS: dict[Op, Form] = {
    Op.NEG:   Form("(-{0})", "(-{0})", "_foreach_neg", "(-{0})", "(-{0})", "(-{0})"),
    Op.NOT:   Form("(not {0})", "torch.logical_not({0})", None, "({0} == 0)", "np.logical_not({0})", "(!{0})"),
    Op.SQRT:  Form("_rt.sqrt({0})", "torch.sqrt({0})", "_foreach_sqrt", "tl.sqrt_rn({0})", "np.sqrt({0})", "std::sqrt({0})"),
    Op.RSQRT: Form("_rt.rsqrt({0})", "torch.rsqrt({0})", "_foreach_rsqrt", "tl.div_rn(1.0, tl.sqrt_rn({0}))", "(1.0 / np.sqrt({0}))", "(1.0f / std::sqrt({0}))"),
    Op.ABS:   Form("abs({0})", "torch.abs({0})", "_foreach_abs", "tl.abs({0})", "np.abs({0})", "std::fabs({0})"),
    Op.SIGN:  Form("_rt.sign({0})", "torch.sign({0})", "_foreach_sign", "_sign({0})", "np.nan_to_num(np.sign({0}), nan=0.0)", "_sign({0})"),
    Op.EXP:   Form("_rt.exp({0})", "torch.exp({0})", "_foreach_exp", "tl.exp({0})", "np.exp({0})", "std::exp({0})"),
    Op.LOG:   Form("_rt.log({0})", "torch.log({0})", "_foreach_log", "tl.log({0})", "np.log({0})", "std::log({0})"),
    # log1p/expm1/tanh/sigmoid/softplus/cbrt: accurate near 0 and IEEE at the ends on every backend;
    # Triton lacks most of them (or has only fast approximations on a GPU): optdsl/triton_lib.py
    Op.SIGMOID: Form("_rt.sigmoid({0})", "torch.sigmoid({0})", "_foreach_sigmoid", "_sigmoid({0})", "_sigmoid({0})", "_sigmoid({0})"),
    Op.TANH:  Form("_rt.tanh({0})", "torch.tanh({0})", "_foreach_tanh", "_tanh({0})", "np.tanh({0})", "std::tanh({0})"),
    # torch.nn.functional.softplus returns x itself above its threshold (20), an error of 2e-9 there:
    # max(x, 0) + log1p(exp(-|x|)) is log(1 + exp(x)) to rounding everywhere, and never overflows
    Op.SOFTPLUS: Form("_rt.softplus({0})", "_rt.softplus({0})", None, "_softplus({0})", "np.logaddexp(0.0, {0})", "_softplus({0})"),
    Op.LOG1P: Form("_rt.log1p({0})", "torch.log1p({0})", "_foreach_log1p", "_log1p({0})", "np.log1p({0})", "std::log1p({0})"),
    Op.EXPM1: Form("_rt.expm1({0})", "torch.expm1({0})", "_foreach_expm1", "_expm1({0})", "np.expm1({0})", "std::expm1({0})"),
    # torch has no cbrt: |x|^(1/3) refined by a Newton step, with x's sign (optdsl.runtime.cbrt)
    Op.CBRT:  Form("_rt.cbrt({0})", "_rt.cbrt({0})", None, "_cbrt({0})", "np.cbrt({0})", "std::cbrt({0})"),
    Op.FLOOR: Form("_rt.floor({0})", "torch.floor({0})", "_foreach_floor", "tl.floor({0})", "np.floor({0})", "std::floor({0})"),
    Op.ON_DEVICE: Form("{0}", "_rt.on_device({0})", None, "{0}", "{0}", "{0}"),
    # `.item()`: the eager paths read the 0-d tensor back as a Python float (torch.optim's `_get_value`:
    # a sync, as torch's Adafactor does); the fused backends do not run it (optdsl.plan.fused_refusal)
    Op.ITEM:  Form("{0}", "_rt.value({0})", None, "{0}", "{0}", "{0}"),
    Op.COPY:  Form("{0}", "torch.clone({0})", "_foreach_clone", "{0}", "np.array({0}, copy=True)", "{0}"),
    # a cover (one accumulator per dim) read elementwise: the min over its accumulators, broadcast
    # (SM3's estimate); numpy holds a cover stacked on a leading axis, one accumulator broadcast per entry
    Op.COVER_MIN: Form("{0}", "_rt.cover_min({0})", None, "_no_fused_cover({0})", "np.min({0}, axis=0)",
                       "_no_fused_cover({0})"),
    Op.ADD:   Form("({0} + {1})", "({0} + {1})", "_foreach_add", "({0} + {1})", "({0} + {1})", "({0} + {1})"),
    Op.SUB:   Form("({0} - {1})", "({0} - {1})", "_foreach_sub", "({0} - {1})", "({0} - {1})", "({0} - {1})"),
    Op.MUL:   Form("({0} * {1})", "({0} * {1})", "_foreach_mul", "({0} * {1})", "({0} * {1})", "({0} * {1})"),
    Op.DIV:   Form("_rt.div({0}, {1})", "({0} / {1})", "_foreach_div", "tl.div_rn({0}, {1})", "({0} / {1})", "({0} / {1})"),
    Op.POW:   Form("_rt.pow({0}, {1})", "torch.pow({0}, {1})", "_foreach_pow", "_pow({0}, {1})", "np.power({0}, {1})", "_pow({0}, {1})"),
    # floor-mod, as Python's % and torch.remainder: the result has the divisor's sign (mod(-1, 3) = 2);
    # a zero divisor, or an infinite dividend, gives NaN on every backend (IEEE fmod)
    Op.MOD:   Form("_rt.mod({0}, {1})", "torch.remainder({0}, {1})", None, "_mod({0}, {1})", "np.remainder({0}, {1})", "_mod({0}, {1})"),
    Op.MIN:   Form("_rt.minimum({0}, {1})", "torch.minimum({0}, {1})", "_foreach_minimum", "_minimum({0}, {1})", "np.minimum({0}, {1})", "_minimum({0}, {1})"),
    Op.MAX:   Form("_rt.maximum({0}, {1})", "torch.maximum({0}, {1})", "_foreach_maximum", "_maximum({0}, {1})", "np.maximum({0}, {1})", "_maximum({0}, {1})"),
    Op.LT:    Form("({0} < {1})", "({0} < {1})", None, "({0} < {1})", "({0} < {1})", "({0} < {1})"),
    Op.LE:    Form("({0} <= {1})", "({0} <= {1})", None, "({0} <= {1})", "({0} <= {1})", "({0} <= {1})"),
    Op.GT:    Form("({0} > {1})", "({0} > {1})", None, "({0} > {1})", "({0} > {1})", "({0} > {1})"),
    Op.GE:    Form("({0} >= {1})", "({0} >= {1})", None, "({0} >= {1})", "({0} >= {1})", "({0} >= {1})"),
    Op.EQ:    Form("({0} == {1})", "({0} == {1})", None, "({0} == {1})", "({0} == {1})", "({0} == {1})"),
    Op.NE:    Form("({0} != {1})", "({0} != {1})", None, "({0} != {1})", "({0} != {1})", "({0} != {1})"),
    Op.AND:   Form("({0} and {1})", "torch.logical_and({0}, {1})", None, "({0} & {1})", "np.logical_and({0}, {1})", "({0} && {1})"),
    Op.OR:    Form("({0} or {1})", "torch.logical_or({0}, {1})", None, "({0} | {1})", "np.logical_or({0}, {1})", "({0} || {1})"),
    Op.WHERE: Form("({1} if {0} else {2})", "torch.where({0}, {1}, {2})", None, "tl.where({0}, {1}, {2})", "np.where({0}, {1}, {2})", "({0} ? {1} : {2})"),
    Op.LERP:  Form("_rt.lerp({0}, {1}, {2})", "torch.lerp({0}, {1}, {2})", "_foreach_lerp", "_lerp({0}, {1}, {2})", "_lerp({0}, {1}, {2})", "_lerp({0}, {1}, {2})"),
    # Muon's Newton-Schulz orthogonalization, in bfloat16 as torch.optim.Muon computes it, the result
    # back in x's dtype (bf16 -> fp32 is exact); a whole-matrix op: no foreach, Triton or C++ form (the
    # fused paths refuse it: optdsl.plan.fused_refusal); the interpreter's is float64 (optdsl.matrix_ops)
    Op.NEWTON_SCHULZ: Form("_rt.no_host_matrix_op()", "_rt.newton_schulz({0}, {1}, {2}, {3}, {4}, {5})", None,
                           "_no_fused_matrix_op({0})", "_newton_schulz({0}, {1}, {2}, {3}, {4}, {5})",
                           "_no_fused_matrix_op({0})"),
    Op.CLAMP: Form("_rt.clamp({0}, {1}, {2})", "torch.clamp({0}, {1}, {2})", None, "_minimum(_maximum({0}, {1}), {2})", "np.minimum(np.maximum({0}, {1}), {2})", "_minimum(_maximum({0}, {1}), {2})"),
}



@dataclass(frozen=True)
class Reduction:
    """How each backend computes a reduction (the `Form` of its Op is its per-tensor torch form).

    A reduction is `finish(fold(map(x)), n)`: `map` is elementwise, `fold` combines in a fixed
    order ("sum" or "max"), `finish` turns the folded value and the element count n into the
    result. The fused backends run map and fold per block and combine the partials; the eager
    paths call torch's reductions, written the way the references write them:

      torch      per tensor, on one tensor ({0}, {1}: operands)
      channel    per output channel, a (size(0), 1, ..., 1) tensor
      foreach    per tensor over lists: a torch._foreach_* call, or None (the torch form per tensor)
      part       group scope: each tensor's part, a 0-d tensor ...
      combine    ... and the group's value from the stacked parts ({parts}) and the element count ({n})
      map/fold   the fused backends' elementwise contribution (Triton source) and how partials join
      finish     torch source turning the folded value ({r}) and the count ({n}) into the result
      numpy      the interpreter's map (float64), folded by `fold` and finished by `finish_numpy`
      cpp        the fused CPU backend's map (C++ on fp32 scalars)
      axis       along one dim ({d}: -1 for `row`, -2 for `column`), the dim kept (size 1), on one tensor
      cover      over all dims but i, for each dim i of one tensor: a list, one accumulator per dim
    """
    torch: str
    channel: str
    foreach: str | None
    part: str
    combine: str
    map: str
    fold: str
    finish: str
    numpy: str
    finish_numpy: str
    cpp: str
    axis: str
    cover: str


REDUCTIONS: dict[Op, Reduction] = {
    Op.SUM:  Reduction("torch.sum({0})", "_rt.channel_sum({0})", None, "torch.sum({0})",
                       "torch.sum(torch.stack({parts}))", "{0}", "sum", "{r}", "{0}", "{r}", "{0}", "_rt.axis_sum({0}, {d})", "_rt.cover_sum({0})"),
    Op.MEAN: Reduction("torch.mean({0})", "_rt.channel_mean({0})", None, "torch.sum({0})",
                       "(torch.sum(torch.stack({parts})) / {n})", "{0}", "sum", "({r} / {n})", "{0}", "({r} / {n})", "{0}", "_rt.axis_mean({0}, {d})", "_rt.cover_mean({0})"),
    Op.NORM: Reduction("torch.linalg.vector_norm({0})", "_rt.channel_norm({0})", "torch._foreach_norm({0})",
                       "torch.linalg.vector_norm({0})", "torch.linalg.vector_norm(torch.stack({parts}))",
                       "({0} * {0})", "sum", "torch.sqrt({r})", "({0} * {0})", "np.sqrt({r})", "({0} * {0})", "_rt.axis_norm({0}, {d})", "_rt.cover_norm({0})"),
    Op.RMS:  Reduction("_rt.rms({0})", "_rt.channel_rms({0})", None, "torch.linalg.vector_norm({0})",
                       "(torch.linalg.vector_norm(torch.stack({parts})) / _rt.sqrt({n}))",
                       "({0} * {0})", "sum", "torch.sqrt({r} / {n})", "({0} * {0})", "np.sqrt({r} / {n})", "({0} * {0})", "_rt.axis_rms({0}, {d})", "_rt.cover_rms({0})"),
    Op.AMAX: Reduction("_rt.amax({0})", "_rt.channel_amax({0})", None, "_rt.amax({0})",
                       "torch.amax(torch.stack({parts}))", "tl.abs({0})", "max", "{r}", "np.abs({0})", "{r}", "std::fabs({0})", "_rt.axis_amax({0}, {d})", "_rt.cover_amax({0})"),
    Op.DOT:  Reduction("torch.sum({0} * {1})", "_rt.channel_sum({0} * {1})", None, "torch.sum({0} * {1})",
                       "torch.sum(torch.stack({parts}))", "({0} * {1})", "sum", "{r}", "({0} * {1})", "{r}", "({0} * {1})", "_rt.axis_sum({0} * {1}, {d})", "_rt.cover_sum({0} * {1})"),
}
assert set(REDUCTIONS) == REDUCE, "every reduction has its forms"
for _op, _r in REDUCTIONS.items():
    OPS[_op] = Form("_rt.no_host_reduction()", _r.torch, _r.foreach, _r.map, _r.numpy, _r.cpp)

# Spec-level function names -> (Op, arity). `x ? a : b` and `where(x, a, b)` are the same Op.
FUNCTIONS: dict[str, tuple[Op, int]] = {
    "sqrt": (Op.SQRT, 1), "rsqrt": (Op.RSQRT, 1), "abs": (Op.ABS, 1), "sign": (Op.SIGN, 1),
    "exp": (Op.EXP, 1), "log": (Op.LOG, 1),
    "sigmoid": (Op.SIGMOID, 1), "tanh": (Op.TANH, 1), "softplus": (Op.SOFTPLUS, 1), "log1p": (Op.LOG1P, 1),
    "expm1": (Op.EXPM1, 1), "cbrt": (Op.CBRT, 1), "floor": (Op.FLOOR, 1), "mod": (Op.MOD, 2),
    "min": (Op.MIN, 2), "max": (Op.MAX, 2), "pow": (Op.POW, 2),
    "clamp": (Op.CLAMP, 3), "lerp": (Op.LERP, 3), "where": (Op.WHERE, 3), "item": (Op.ITEM, 1),
    "newton_schulz": (Op.NEWTON_SCHULZ, 6),
}
# Reductions: name -> (Op, arity without the optional scope). `norm(x)` is per tensor;
# `norm(x, channel)` per output channel; `norm(x, group)` over every tensor of the param group.
REDUCTION_FUNCTIONS: dict[str, tuple[Op, int]] = {
    "sum": (Op.SUM, 1), "mean": (Op.MEAN, 1), "norm": (Op.NORM, 1), "rms": (Op.RMS, 1),
    "amax": (Op.AMAX, 1), "dot": (Op.DOT, 2),
}
# `size(d)`: the parameter's size along dim d, a literal (1 past its last dim, as broadcasting reads it;
# `size(-1)` is the last dim's, and 1 before the first dim).
SHAPE_FUNCTIONS: dict[str, Op] = {"size": Op.SIZE}
# Inputs the runtime estimates before each step (`input name = estimator(args)`, optdsl/inputs.py):
# each argument's role and what it names (a one-number hyper, or a flag).
ESTIMATORS: dict[str, tuple[tuple[str, str], ...]] = {
    # the Hessian's diagonal, Hutchinson's E[z ⊙ Hz] over Rademacher z (Adahessian): `samples`
    # probes, re-estimated every `every` steps of the tensor, and for a 4-D tensor with
    # `average_conv` the |estimate| averaged over its two spatial dims
    "hutchinson": (("samples", "hyper"), ("every", "hyper"), ("average_conv", "flag")),
}
# Functions whose argument is a state's name, not a value.
STATE_PREDICATES: dict[str, Op] = {"is_empty": Op.IS_EMPTY}

BINARY_SYMBOLS: dict[str, Op] = {"+": Op.ADD, "-": Op.SUB, "*": Op.MUL, "/": Op.DIV, "^": Op.POW,
                                 "and": Op.AND, "or": Op.OR}
COMPARE_SYMBOLS: dict[str, Op] = {"<": Op.LT, "<=": Op.LE, ">": Op.GT, ">=": Op.GE, "==": Op.EQ, "!=": Op.NE}

# Inputs every update block can read.
INPUTS: dict[str, Op] = {"param": Op.PARAM, "grad": Op.GRAD, "step": Op.STEP,
                         "numel": Op.NUMEL, "ndim": Op.NDIM, "channel_numel": Op.CHANNEL_NUMEL,
                         "dtype_eps": Op.DTYPE_EPS}
# The param group's lr at construction (group["initial_lr"], as torch's LR schedulers record it): a
# host value, read where the spec has a hyper `lr`.
INITIAL_LR = "initial_lr"
# Named numbers: `inf` (and `-inf`), where a literal cannot spell it.
CONSTANTS: dict[str, float] = {"inf": math.inf}
# The word that stands for an optional hyper's absence: `hyper clip = none`, `if clip != none`.
NONE = "none"

missing = set(Op) - set(OPS) - {Op.CONST, Op.HYPER, Op.FLAG, Op.STEP, Op.PARAM, Op.GRAD, Op.STATE, Op.VAR, Op.IS_EMPTY,
                                 Op.IS_SET, Op.CHOICE, Op.NUMEL, Op.NDIM, Op.CHANNEL_NUMEL, Op.SIZE, Op.DTYPE_EPS}
assert not missing, f"ops without backend forms: {missing}"

# The spec-level functions by what they do, in the order diagnostics list them (`unknown function`).
FUNCTION_GROUPS: dict[str, dict] = {
    "elementwise math": FUNCTIONS,
    "reductions": REDUCTION_FUNCTIONS,
    "shape inputs": SHAPE_FUNCTIONS,
    "state tests": STATE_PREDICATES,
}

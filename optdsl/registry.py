"""One registry of shipped optimizers drives `optdsl verify`, the benchmark and
every shared test (optax style): adding an optimizer is one spec file plus one
entry here.

Each entry names its trusted reference (CATALOG.md), the hyper/flag grid to
verify over, and how to build the reference for a given combination."""
from __future__ import annotations

import importlib
import importlib.util
import itertools
import math
import sys
import types
from dataclasses import dataclass, field
from typing import Any, Callable

import torch


def timm_class(module: str, name: str):
    """timm.optim without running timm/__init__ (it needs torchvision, which has no CPU build here)."""
    loaded = sys.modules.get("timm")
    if loaded is not None and getattr(loaded, "__path__", None):
        # already stubbed (or imported): find_spec would raise on the stub, whose __spec__ is None
        root = list(loaded.__path__)[0]
    else:
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
    wave: int = 1                                    # CATALOG.md's wave (tests select by it)
    # Why our foreach path is compared with the reference's for-loop path, not its foreach path,
    # where those two disagree beyond tolerance themselves ("" : compare foreach with foreach).
    foreach_against_loop: str = ""
    # Steps of the quick `optdsl verify` (0: verify.QUICK_STEPS): more where a level of the grid
    # acts only later (ASGD's t0), fewer where the fused path is slow in the interpreter.
    quick_steps: int = 0
    # The optimizer has train() / eval() modes (Schedule-Free; ours starts in train mode, and so does
    # the reference as the registry builds it): optdsl.verify switches both to eval and back during
    # the run, and compares them in eval mode at its end.
    modes: bool = False
    # The loss whose backward(create_graph=True) makes each step's gradients, for a spec with an
    # `input` estimated from their graph (Adahessian): objective(params, seed) -> loss, the same
    # for every optimizer of a run. None: the gradients are random tensors.
    objective: Callable[[list, int], torch.Tensor] | None = None
    shapes: tuple | None = None                      # the params' shapes, where the defaults do not do
    # The gradients are sparse (COO, random rows touched, some twice, sometimes none): a spec with
    # `sparse rows only` (SparseAdam) refuses dense ones. verify.run_against draws them by
    # registry.sparse_gradient.
    sparse_grads: bool = False
    # The param ranks the reference accepts (None: any); shared tests give such a spec params of these
    # ranks only (torch.optim.Muon: 2)
    ranks: tuple[int, ...] | None = None

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

    def reference_path(self, path: str) -> bool:
        """Whether our `path` is compared with the reference's foreach path (else its for-loop)."""
        return path == "foreach" and self.reference_foreach and not self.foreach_against_loop

    def reference_label(self, path: str) -> str:
        if self.reference_foreach and path == "foreach" and self.foreach_against_loop:
            return f"{self.reference_name} (loop)"
        return self.reference_name

    def shapes_for(self, shapes) -> tuple:
        """`shapes`, each of a rank the reference accepts: where it takes matrices only (torch.optim.Muon),
        a shape of another rank becomes the 2-D one of as many elements (rows: its first dim)."""
        if self.ranks is None:
            return tuple(shapes)
        return tuple(tuple(s) if len(s) in self.ranks else ((s[0] if s else 1), math.prod(s[1:])) for s in shapes)

    def supports(self, path: str) -> bool:
        """Whether our class has `path` ("loop", "foreach", "fused" or "cpu", the fused C++ backend): a
        spec the fused kernels cannot run yet refuses fused=True (optdsl.plan.fused_refusal)."""
        from . import optim
        return path in ("loop", "foreach") or not getattr(getattr(optim, self.name), "_fused_refused", "")

    def make(self, params, combo: dict, path: str):
        from . import optim
        cls = getattr(optim, self.name)
        kwargs = {**self.base, **combo}
        if path == "foreach":
            kwargs["foreach"] = True
        elif path in ("fused", "cpu"):   # "cpu": the fused C++ backend (optdsl.verify selects it)
            kwargs["fused"] = True
        else:
            kwargs["foreach"] = False
        return cls(params, **kwargs)


def _lion_reference(params, maximize=False, **kw):
    import lion_pytorch
    if maximize:
        raise ValueError("lion_pytorch.Lion has no maximize")
    return lion_pytorch.Lion(params, **kw)


def fraction(grid: dict[str, tuple], *aliases: tuple[str, tuple[str, ...]]) -> Callable[[dict], bool]:
    """A `valid` filter that keeps a regular two-level fractional factorial of `grid`: each alias
    (k, (a, b, c, ...)) sets factor k's level (index in its grid entry) to the parity of the levels
    of a, b, c, ...; the other factors are crossed in full. With aliases over three or more factors
    every pair of factors still meets in all four level combinations (resolution IV or more), in
    half (one alias) or a quarter (two) of the runs."""
    def level(combo: dict, key: str) -> int:
        return grid[key].index(combo[key])

    def valid(combo: dict) -> bool:
        return all(level(combo, k) == sum(level(combo, j) for j in js) % 2 for k, js in aliases)
    return valid


REGISTRY: dict[str, Entry] = {}


def with_set_gradients() -> list[str]:
    """The entries whose optimizers step on dense gradients a test sets itself (tensors without a
    graph): all but those with an `input` estimated from the gradients' graph (Entry.objective),
    which step only after loss.backward(create_graph=True) (tests/test_adahessian.py covers them),
    and those that take sparse gradients only (tests/test_sparse.py)."""
    return [n for n, e in REGISTRY.items() if e.objective is None and not e.sparse_grads]


def sparse_gradient(shape: tuple, generator: torch.Generator, dtype=torch.float32) -> torch.Tensor:
    """A random sparse COO gradient over dim 0's rows, as nn.Embedding(sparse=True) makes: up to
    rows + 1 entries, so some rows are touched twice (coalescing sums them) and some not at all,
    and a one-row tensor is sometimes not touched. Uncoalesced, as backward leaves it."""
    rows = shape[0]
    nnz = int(torch.randint(0, rows + 2, (), generator=generator))
    index = torch.randint(0, rows, (1, nnz), generator=generator)
    values = torch.randn((nnz, *shape[1:]), generator=generator, dtype=dtype)
    return torch.sparse_coo_tensor(index, values, shape, check_invariants=True)


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


# ---- wave 2: the rest of torch.optim's elementwise family ------------------------------------
# Grids of at most 16 combinations: two levels per hyper and flag, fractional where a spec has
# five or six (see `fraction`), so every hyper and flag, and every pair of them, is exercised.

_ADAGRAD = {"lr_decay": (0.0, 0.01), "initial_accumulator_value": (0.0, 0.1), "eps": (1e-10, 1e-3),
            "weight_decay": (0.0, 0.1), "maximize": (False, True)}
register(Entry(
    "Adagrad", torch.optim.Adagrad, "torch.optim.Adagrad", grid=_ADAGRAD, base={"lr": 0.01},
    valid=fraction(_ADAGRAD, ("maximize", ("lr_decay", "initial_accumulator_value", "eps", "weight_decay"))),
    torch_class=torch.optim.Adagrad, reference_foreach=True, bench=True, wave=2,
))
_RMSPROP = {"alpha": (0.99, 0.9), "eps": (1e-8, 1e-3), "weight_decay": (0.0, 0.1), "momentum": (0.0, 0.9),
            "centered": (False, True), "maximize": (False, True)}
register(Entry(
    "RMSprop", torch.optim.RMSprop, "torch.optim.RMSprop", grid=_RMSPROP, base={"lr": 0.01},
    valid=fraction(_RMSPROP, ("centered", ("alpha", "eps", "weight_decay")),
                   ("maximize", ("eps", "weight_decay", "momentum"))),
    torch_class=torch.optim.RMSprop, reference_foreach=True, bench=True, wave=2,
))
_ADADELTA = {"lr": (1.0, 0.1), "rho": (0.9, 0.5), "eps": (1e-6, 1e-3), "weight_decay": (0.0, 0.1),
             "maximize": (False, True)}
register(Entry(
    "Adadelta", torch.optim.Adadelta, "torch.optim.Adadelta", grid=_ADADELTA,
    valid=fraction(_ADADELTA, ("maximize", ("lr", "rho", "eps", "weight_decay"))),
    torch_class=torch.optim.Adadelta, reference_foreach=True, bench=True, wave=2,
))
register(Entry(
    "Adamax", torch.optim.Adamax, "torch.optim.Adamax",
    grid={"betas": ((0.9, 0.999), (0.8, 0.9)), "eps": (1e-8, 1e-3), "weight_decay": (0.0, 0.1),
          "maximize": (False, True)},
    base={"lr": 0.01},
    torch_class=torch.optim.Adamax, reference_foreach=True, bench=True, wave=2,
))
register(Entry(
    "NAdam", torch.optim.NAdam, "torch.optim.NAdam",
    grid={"momentum_decay": (4e-3, 0.1), "decoupled_weight_decay": (False, True), "weight_decay": (0.0, 0.1),
          "maximize": (False, True)},
    base={"lr": 0.01},
    torch_class=torch.optim.NAdam, reference_foreach=True, bench=True, wave=2,
))
register(Entry(
    # rho_t > 5 from step 6 on (betas[1] = 0.999): both sides of the host branch run
    "RAdam", torch.optim.RAdam, "torch.optim.RAdam",
    grid={"decoupled_weight_decay": (False, True), "weight_decay": (0.0, 0.1), "maximize": (False, True)},
    base={"lr": 0.01},
    torch_class=torch.optim.RAdam, reference_foreach=True, bench=True, wave=2,
))
register(Entry(
    # the second step_sizes pair is tight enough that both bounds of the clamp are reached
    "Rprop", torch.optim.Rprop, "torch.optim.Rprop",
    grid={"etas": ((0.5, 1.2), (0.3, 1.5)), "step_sizes": ((1e-6, 50.0), (1e-4, 0.02)), "maximize": (False, True)},
    base={"lr": 0.01},
    torch_class=torch.optim.Rprop, reference_foreach=True, bench=True, wave=2,
))
_ASGD = {"lambd": (1e-4, 1e-2), "alpha": (0.75, 0.5), "t0": (0.0, 50.0), "weight_decay": (0.0, 0.1),
         "maximize": (False, True)}
register(Entry(
    # t0 small (torch's default is 1e6): averaging starts at step 2 or after step 51 (quick_steps=60)
    "ASGD", torch.optim.ASGD, "torch.optim.ASGD", grid=_ASGD, base={"lr": 0.01},
    valid=fraction(_ASGD, ("maximize", ("lambd", "alpha", "t0", "weight_decay"))),
    torch_class=torch.optim.ASGD, reference_foreach=True, bench=True, wave=2, quick_steps=60,
    foreach_against_loop=(
        "torch's own ASGD paths differ by up to 1.6e-5 after 200 steps (lambd=1e-4): its for-loop "
        "rounds the decay factor 1 - lambd * eta to float32 every step, a bias of the same sign each "
        "step, where its foreach path computes param - eta * (grad + lambd * param). Our paths all "
        "follow the for-loop, bit for bit on the loop path."),
))


# ---- wave 3: per-tensor reductions and scalar state ---------------------------------------------
# The references are not torch.optim classes (torch_class=None): their state_dicts are compared
# on the keys both keep (timm's Lamb keeps `step` in the param group, Amos too; NvNovoGrad, AdamP
# and SGDP keep a Python int `step`). timm's and pytorch_optimizer's classes pick their per-tensor
# (for-loop) or multi-tensor path by `foreach`; the references here always take the for-loop path
# (`foreach=False`), the one the loop path mirrors op for op, and our foreach path is compared with
# it too. Grids: two levels per hyper and flag, fractional (`fraction`) to at most 16 combinations.

def _timm_reference(module: str, name: str, foreach: bool | None = False):
    def make(params, **kw):
        cls = timm_class(module, name)
        if foreach is not None:
            kw["foreach"] = foreach
        return cls(params, **kw)
    return make


def _amos_reference(params, **kw):
    import pytorch_optimizer
    return pytorch_optimizer.Amos(params, foreach=False, **kw)


def _formula_reference(name: str):
    def make(params, **kw):
        from . import references
        return getattr(references, name)(params, **kw)
    return make


# max_grad_norm=1.0 clips every step here: the test gradients' global norm is about 16 (about 5.3
# on the quick verify's smaller shapes).
_LAMB = {"betas": ((0.9, 0.999), (0.8, 0.99)), "eps": (1e-6, 1e-3), "weight_decay": (0.0, 0.01),
         "max_grad_norm": (None, 1.0), "bias_correction": (True, False), "grad_averaging": (True, False),
         "trust_clip": (False, True), "always_adapt": (False, True)}
register(Entry(
    "Lamb", _timm_reference("lamb", "Lamb"), "timm.optim.lamb.Lamb", grid=_LAMB, base={"lr": 0.01},
    valid=fraction(_LAMB, ("bias_correction", ("eps", "weight_decay", "max_grad_norm")),
                   ("grad_averaging", ("betas", "weight_decay", "max_grad_norm")),
                   ("trust_clip", ("betas", "eps", "weight_decay")),
                   ("always_adapt", ("betas", "eps", "max_grad_norm"))),
    wave=3, bench=True,   # `optdsl bench`: against timm's Lamb, whose foreach path is its own
))
# trust_coeff=0.05 with lr=0.01 puts trust_ratio / lr above 1: LARC's clip binds.
_LARS = {"momentum": (0.0, 0.9), "dampening": (0.0, 0.3), "weight_decay": (0.0, 0.01), "nesterov": (False, True),
         "trust_coeff": (1e-3, 0.05), "eps": (1e-8, 1e-3), "trust_clip": (False, True), "always_adapt": (False, True)}
_LARS_FRACTION = fraction(_LARS, ("trust_coeff", ("dampening", "weight_decay", "nesterov")),
                          ("eps", ("momentum", "weight_decay", "nesterov")),
                          ("trust_clip", ("momentum", "dampening", "nesterov")),
                          ("always_adapt", ("momentum", "dampening", "weight_decay")))
register(Entry(
    "Lars", _timm_reference("lars", "Lars"), "timm.optim.lars.Lars", grid=_LARS, base={"lr": 0.01},
    valid=lambda c: _LARS_FRACTION(c) and (not c["nesterov"] or (c["momentum"] > 0 and c["dampening"] == 0)),
    wave=3,
))
# betas[1]=0.5 lets the norm average fall as well as rise: amsgrad's max binds.
_NVNOVOGRAD = {"betas": ((0.95, 0.98), (0.9, 0.5)), "eps": (1e-8, 1e-3), "weight_decay": (0.0, 0.1),
               "grad_averaging": (False, True), "amsgrad": (False, True), "decoupled_decay": (False, True)}
register(Entry(
    "NvNovoGrad", _timm_reference("nvnovograd", "NvNovoGrad", foreach=None), "timm.optim.nvnovograd.NvNovoGrad",
    grid=_NVNOVOGRAD, base={"lr": 0.01},
    valid=fraction(_NVNOVOGRAD, ("amsgrad", ("betas", "eps", "weight_decay")),
                   ("decoupled_decay", ("eps", "weight_decay", "grad_averaging"))),
    wave=3,
))
# delta=1.5: the projection runs on some steps, in the channel view on some, the layer view on others.
_ADAMP = {"betas": ((0.9, 0.999), (0.8, 0.99)), "eps": (1e-8, 1e-3), "weight_decay": (0.0, 0.1),
          "delta": (0.1, 1.5), "wd_ratio": (0.1, 0.5), "nesterov": (False, True), "caution": (False, True)}
register(Entry(
    "AdamP", _timm_reference("adamp", "AdamP", foreach=None), "timm.optim.adamp.AdamP", grid=_ADAMP,
    base={"lr": 0.01}, quick_steps=6,   # 11 launches a step, one program per channel
    valid=fraction(_ADAMP, ("wd_ratio", ("betas", "eps", "weight_decay")),
                   ("nesterov", ("eps", "weight_decay", "delta")),
                   ("caution", ("betas", "weight_decay", "delta"))),
    wave=3,
))
_SGDP = {"momentum": (0.0, 0.9), "dampening": (0.0, 0.3), "weight_decay": (0.0, 0.1), "nesterov": (False, True),
         "eps": (1e-8, 1e-3), "delta": (0.1, 1.5), "wd_ratio": (0.1, 0.5), "caution": (False, True)}
register(Entry(
    "SGDP", _timm_reference("sgdp", "SGDP", foreach=None), "timm.optim.sgdp.SGDP", grid=_SGDP, base={"lr": 0.01},
    quick_steps=6,   # as AdamP
    valid=fraction(_SGDP, ("eps", ("dampening", "weight_decay", "nesterov")),
                   ("delta", ("momentum", "weight_decay", "nesterov")),
                   ("wd_ratio", ("momentum", "dampening", "nesterov")),
                   ("caution", ("momentum", "dampening", "weight_decay"))),
    wave=3,
))
_AMOS = {"beta": (0.999, 0.9), "momentum": (0.0, 0.9), "extra_l2": (0.0, 0.1), "c_coef": (0.25, 0.5),
         "d_coef": (0.25, 0.5), "eps": (1e-18, 1e-3), "maximize": (False, True)}
register(Entry(
    "Amos", _amos_reference, "pytorch_optimizer.Amos", grid=_AMOS, base={"lr": 0.01},
    valid=fraction(_AMOS, ("d_coef", ("beta", "momentum", "extra_l2")),
                   ("eps", ("momentum", "extra_l2", "c_coef")),
                   ("maximize", ("beta", "extra_l2", "c_coef"))),
    wave=3,
))
register(Entry(
    "AdaX", _formula_reference("AdaX"), "optdsl.references.AdaX",
    grid={"betas": ((0.9, 1e-4), (0.8, 1e-2)), "eps": (1e-8, 1e-3), "weight_decay": (0.0, 0.1),
          "maximize": (False, True)},
    base={"lr": 0.01}, wave=3,
))
_FUNNELLED = {"momentum": (0.9, 0.5), "beta": (0.9, 0.5), "eta": (1.0, 0.5), "gamma_p": (1e-2, 0.1),
              "gamma_s": (1e-3, 1e-2), "weight_decay": (0.0, 0.1), "maximize": (False, True)}
register(Entry(
    "FunnelledSGDM", _formula_reference("FunnelledSGDM"), "optdsl.references.FunnelledSGDM", grid=_FUNNELLED,
    base={"lr": 0.01},
    valid=fraction(_FUNNELLED, ("gamma_s", ("momentum", "beta", "eta")),
                   ("weight_decay", ("beta", "eta", "gamma_p")),
                   ("maximize", ("momentum", "eta", "gamma_p"))),
    wave=3,
))


# ---- wave 4: wrappers (specs/wrappers/) around shipped specs --------------------------------------
# A composed spec is one program: the wrapper's hypers beside the wrapped spec's, one kernel per
# phase. The reference wraps the torch.optim class in pytorch_optimizer's Lookahead, whose own
# foreach path (torch._foreach_lerp_) our foreach path meets; its state_dict is its own layout
# ({"lookahead_state", "base_optimizer"}), so the state is compared per parameter on shared keys.

def _lookahead_reference(inner: type):
    def make(params, lookahead_k=5, lookahead_alpha=0.5, foreach=False, **kw):
        from pytorch_optimizer import Lookahead
        return Lookahead(inner(params, foreach=foreach, **kw), k=lookahead_k, alpha=lookahead_alpha)
    return make


# lookahead_k=3 syncs six times in 20 steps; lookahead_alpha=0.8 and 0.3 pull the fast weights
# back by different amounts
register(Entry(
    "LookaheadAdam", _lookahead_reference(torch.optim.Adam), "pytorch_optimizer.Lookahead(Adam)",
    grid={"lookahead_k": (5, 3), "lookahead_alpha": (0.5, 0.8), "amsgrad": (False, True), "weight_decay": (0.0, 0.1)},
    base={"lr": 0.01}, reference_foreach=True, wave=4,
    valid=lambda c: c["lookahead_k"] == 3 or (c["lookahead_alpha"] == 0.5 and not c["amsgrad"]),
))
register(Entry(
    "LookaheadSGD", _lookahead_reference(torch.optim.SGD), "pytorch_optimizer.Lookahead(SGD)",
    grid={"lookahead_k": (5, 3), "lookahead_alpha": (0.5, 0.3), "momentum": (0.0, 0.9), "nesterov": (False, True)},
    base={"lr": 0.01}, reference_foreach=True, wave=4,
    valid=lambda c: (not c["nesterov"] or c["momentum"] > 0) and (c["lookahead_k"] == 3 or c["lookahead_alpha"] == 0.5),
))


def _averaged_reference(inner: type, key: str):
    """torch.optim.swa_utils.AveragedModel over the params of `inner` (optdsl.references.Averaged)."""
    def make(params, foreach=False, ema_decay=None, swa_start=0, swa_freq=1, **kw):
        from torch.optim.swa_utils import get_ema_multi_avg_fn
        from .references import Averaged
        avg = None if ema_decay is None else get_ema_multi_avg_fn(ema_decay)
        return Averaged(inner(params, foreach=foreach, **kw), key, avg, start=int(swa_start), freq=int(swa_freq))
    return make


# ema_decay=0.5 moves the average visibly in 20 steps; swa_start=4 and swa_freq=3 start late, skip
register(Entry(
    "EmaAdamW", _averaged_reference(torch.optim.AdamW, "ema"),
    "swa_utils.AveragedModel(ema) after AdamW", grid={"ema_decay": (0.999, 0.5), "amsgrad": (False, True)},
    base={"lr": 0.01}, reference_foreach=True, wave=4,
))
register(Entry(
    "SwaSGD", _averaged_reference(torch.optim.SGD, "swa"), "swa_utils.AveragedModel after SGD",
    grid={"swa_start": (0, 4), "swa_freq": (1, 3), "momentum": (0.0, 0.9)},
    base={"lr": 0.01}, reference_foreach=True, wave=4,
    valid=lambda c: c["swa_freq"] == 3 or c["momentum"] == 0.9,
))


# ---- Schedule-Free: train() / eval() modes --------------------------------------------------------
# warmup_steps=5 warms up over a quarter of the run (the weights then grow with lr_max); r=0.5 and
# weight_lr_power=0 change the averaging weights; the run switches to eval and back every 7 steps.
_SCHEDULE_FREE = {"weight_decay": (0.0, 0.1), "warmup_steps": (0, 5), "r": (0.0, 0.5), "weight_lr_power": (2.0, 0.0),
                  "betas": ((0.9, 0.999), (0.95, 0.99))}
register(Entry(
    "ScheduleFreeAdamW", _formula_reference("schedule_free_adamw"),
    "schedulefree.AdamWScheduleFree", grid=_SCHEDULE_FREE, base={"lr": 0.01},
    valid=fraction(_SCHEDULE_FREE, ("betas", ("weight_decay", "warmup_steps", "r", "weight_lr_power"))),
    reference_foreach=True, wave=4, modes=True,
))


# ---- factored state ------------------------------------------------------------------------------
register(Entry(
    "Adafactor", torch.optim.Adafactor, "torch.optim.Adafactor",
    grid={"lr": (0.01, 0.1), "beta2_decay": (-0.8, -0.5), "eps": ((None, 1e-3), (1e-20, 1e-2)), "d": (1.0, 1.5),
          "weight_decay": (0.0, 0.1), "maximize": (False, True)},
    torch_class=torch.optim.Adafactor, reference_foreach=True, wave=4,
    # ranks 0 to 4: a 0-d and a 1-d tensor keep the whole second moment, the others factor it
    shapes=((5, 7), (3, 4, 6), (9,), (), (2, 3, 2, 4), (1, 6)),
    foreach_against_loop="torch's foreach Adafactor multiplies the update by its step size, then adds it "
                         "(two roundings); its loop adds with alpha= (one). Ours reads norms back to the host "
                         "(item()) mid-update, so its foreach path takes the tensors one at a time, as the loop",
))


def _sm3_reference(params, **kw):
    import pytorch_optimizer
    return pytorch_optimizer.SM3(params, foreach=False, **kw)


_SM3 = {"lr": (0.1, 0.01), "momentum": (0.0, 0.9), "beta": (0.0, 0.9), "eps": (1e-30, 1e-3), "maximize": (False, True)}
register(Entry(
    # pytorch_optimizer's foreach path runs its for-loop's per-tensor rule, so its loop is the reference
    # for both of ours; its accumulators are state_dict keys accumulator_0, accumulator_1, ... as ours
    "SM3", _sm3_reference, "pytorch_optimizer.SM3", grid=_SM3,
    valid=fraction(_SM3, ("maximize", ("lr", "momentum", "beta", "eps"))), wave=4,
    # ranks 0 to 4: one accumulator per dim (a 0-d tensor keeps one number)
    shapes=((5, 7), (3, 4, 6), (9,), (), (2, 3, 2, 4), (1, 6)),
))


# ---- matrix updates --------------------------------------------------------------------------------
register(Entry(
    "Muon", torch.optim.Muon, "torch.optim.Muon",
    grid={"lr": (0.02, 0.1), "momentum": (0.95, 0.5), "nesterov": (True, False), "weight_decay": (0.1, 0.0),
          "adjust_lr_fn": (None, "original", "match_rms_adamw"), "ns_steps": (5, 2),
          "ns_coefficients": ((3.4445, -4.7750, 2.0315), (2.0, -1.5, 0.5)), "eps": (1e-7, 1e-2)},
    torch_class=torch.optim.Muon, wave=4, ranks=(2,),
    # 2-D only (torch.optim.Muon's rule): wide, tall (transposed for the iteration), square, a row, a column
    shapes=((5, 7), (8, 3), (4, 4), (1, 6), (6, 1)),
))


# ---- sparse gradients ------------------------------------------------------------------------------
register(Entry(
    "SparseAdam", torch.optim.SparseAdam, "torch.optim.SparseAdam",
    grid={"betas": ((0.9, 0.999), (0.5, 0.9)), "maximize": (False, True), "eps": (1e-8, 1e-3)},
    base={"lr": 0.01}, wave=4, sparse_grads=True,
))


# ---- second-order inputs ---------------------------------------------------------------------------
def separable_loss(params, seed: int) -> torch.Tensor:
    """Σ c·θ + d·θ²/2 + θ⁴/12 over every element (c, d drawn from `seed`): each element's loss
    alone, so the Hessian is diagonal (d + θ²) and Hutchinson's z ⊙ Hz is exactly that diagonal
    for any ±1 probe z, ours and timm's alike."""
    g = torch.Generator().manual_seed(seed)
    total = torch.zeros((), dtype=params[0].dtype)
    for p in params:
        c = torch.randn(p.shape, generator=g, dtype=p.dtype)
        d = 0.5 + torch.rand(p.shape, generator=g, dtype=p.dtype)
        total = total + (c * p + 0.5 * d * p * p + p ** 4 / 12).sum()
    return total


def _adahessian_reference(params, **kw):
    return timm_class("adahessian", "Adahessian")(params, **kw)


# hessian_power=0.5 and weight_decay, two probes renewed every other step, and a conv kernel
# (the 4-D tensor) averaged over its spatial dims
_ADAHESSIAN = {"hessian_power": (1.0, 0.5), "weight_decay": (0.0, 0.01), "n_samples": (1, 2), "update_each": (1, 2),
               "avg_conv_kernel": (False, True)}
register(Entry(
    "Adahessian", _adahessian_reference, "timm.optim.Adahessian", grid=_ADAHESSIAN, base={"lr": 0.05},
    valid=fraction(_ADAHESSIAN, ("avg_conv_kernel", ("hessian_power", "weight_decay", "n_samples", "update_each"))),
    wave=4, objective=separable_loss, shapes=((4, 3), (3,), (1,), (2, 3, 2, 2)),
))

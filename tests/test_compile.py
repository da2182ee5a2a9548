"""torch.compile(opt.step, fullgraph=True) and capturable=True for every shipped spec.

A per-tensor `if` whose condition is a tensor there (RAdam's `rho_t > 5`, ASGD's `mu != 1`, AdamP's
and SGDP's tests on a reduction's value) runs as selects (optdsl.selects), so neither a traced step
nor a capturable one branches on a device value. The compiles use backend="eager": graph breaks
are dynamo's, not the backend's, and inductor's C++ build of every spec would take minutes on two
cores; test_compile_inductor_adam runs one real inductor compile."""
from __future__ import annotations

import os
import shutil
import sys

import pytest
import torch


sys.path.insert(0, __file__.rsplit("/", 1)[0])
from test_api_parity import (NAMES, skip_refused, assert_params_close, combo_of, cpu_capturable, make_params,  # noqa: E402,F401
                             ours, reference, set_grads, twin)

# Steps that reach both sides of every per-tensor branch: RAdam's rho_t > 5 from step 6 on; ASGD's
# averaging (mu != 1) from step t0 + 1 on (t0 is set low below).
STEPS = 7
# Hypers that make the branches flip within STEPS on the test's params: ASGD averages from step 3;
# for AdamP and SGDP the last tensor's group is projected (delta so large every cosine is below it).
BRANCHING = {"ASGD": {"t0": 2.0}}
PROJECTED = {"AdamP", "SGDP"}


def _groups(name, params):
    if name in PROJECTED:
        return [{"params": params[:2]}, {"params": params[2:], "delta": 1e3}]
    return params


def _make(name, params, path, **extra):
    combo = {**combo_of(name), **BRANCHING.get(name, {})}
    return ours(name, _groups(name, params), combo, path, **extra)


def _run(opt, params, steps=STEPS, each=None):
    for step in range(steps):
        set_grads(step, params)
        (each or opt.step)()


# Where the compiled step is bitwise the eager one: traced host math is float32 tensor math (the
# step is a traced tensor, as in torch.optim's compiled steps), eager host math float64 Python;
# specs whose host math is exact either way, or that have none, agree bit for bit.
BITWISE = {(n, path) for n in ("SGD", "Lion", "Adadelta", "Rprop", "ASGD", "Lamb", "Lars", "NvNovoGrad", "SGDP",
                                "Amos", "FunnelledSGDM") for path in ("loop", "foreach")} | {("RMSprop", "foreach")}


@pytest.mark.parametrize("path", ["loop", "foreach"])
@pytest.mark.parametrize("name", NAMES)
def test_compile_step_fullgraph(name, path):
    """No graph break on any spec; results equal the eager step (bitwise where BITWISE says) and the
    reference's within assert_close."""
    torch._dynamo.reset()
    a = make_params(name, 0)
    b, c = twin(a), twin(a)
    opt_a, opt_b = _make(name, a, path), _make(name, b, path)
    opt_c = reference(name, _groups(name, c), {**combo_of(name), **BRANCHING.get(name, {})})
    compiled = torch.compile(opt_a.step, fullgraph=True, backend="eager")
    _run(opt_a, a, each=compiled)
    _run(opt_b, b)
    _run(opt_c, c)
    assert_params_close(a, c)
    if (name, path) in BITWISE:
        for x, y in zip(a, b):
            assert torch.equal(x, y), name
    assert_params_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(shutil.which("gcc") is None and shutil.which("cc") is None, reason="inductor needs a C compiler")
def test_compile_inductor_adam():
    """One real compile (inductor, C++ on CPU) of the foreach path, fullgraph, against eager torch."""
    torch._dynamo.reset()
    a = make_params("Adam", 0)
    b = twin(a)
    from optdsl import optim
    opt_a = optim.Adam(a, lr=0.01, weight_decay=0.1, amsgrad=True, foreach=True)
    opt_b = torch.optim.Adam(b, lr=0.01, weight_decay=0.1, amsgrad=True, foreach=True)
    compiled = torch.compile(opt_a.step, fullgraph=True)
    for step in range(3):
        set_grads(step, a, b)
        compiled()
        opt_b.step()
    assert_params_close(a, b)


# ---- capturable: no host sync -------------------------------------------------------------------

# Every way Python reads a tensor's value back to the host.
HOST_READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")


class HostRead(AssertionError):
    pass


class SyncDetector:
    """While active, any Python read of a tensor's value (.item(), `if t`, float(t), ...) raises;
    on CUDA, torch.cuda's sync debug mode errors on the synchronising copies as well."""

    def __init__(self, monkeypatch):
        self.monkeypatch = monkeypatch
        self.real = {n: getattr(torch.Tensor, n) for n in HOST_READS}

    def __enter__(self):
        for n in HOST_READS:
            def read(t, *args, _n=n, **kwargs):
                raise HostRead(f"capturable step read a tensor back with {_n}")
            self.monkeypatch.setattr(torch.Tensor, n, read)
        if torch.cuda.is_available():
            torch.cuda.set_sync_debug_mode("error")
        return self

    def __exit__(self, *exc):
        if torch.cuda.is_available():
            torch.cuda.set_sync_debug_mode("default")
        for n in HOST_READS:
            self.monkeypatch.setattr(torch.Tensor, n, self.real[n])


def test_sync_detector_catches_reads(monkeypatch):
    t = torch.ones(())
    for read in (lambda: t.item(), lambda: bool(t > 0), lambda: float(t), lambda: t.tolist(), lambda: int(t),
                 lambda: 1.0 if t > 0 else 0.0, lambda: t.cpu()):
        with SyncDetector(monkeypatch), pytest.raises(HostRead):
            read()
    assert bool(t > 0) and float(t) == 1.0   # restored


@pytest.mark.parametrize("path", ["loop", "foreach", "fused"])
@pytest.mark.parametrize("name", NAMES)
def test_capturable_step_reads_nothing_back(name, path, cpu_capturable, monkeypatch):
    """capturable=True on CPU (the device is the CPU; see cpu_capturable): after one warm-up step
    (lazy state, the fused path's cached work list) no step reads a tensor's value into Python, and
    the results match capturable=False within tolerance."""
    from optdsl import optim
    cls = getattr(optim, name)
    if getattr(cls, "_capturable_refused", False):   # item(): a sync by design; refused (tests/test_factored.py)
        with pytest.raises(ValueError, match="capturable=True is not supported"):
            cls(make_params(name, 0), capturable=True)
        return
    skip_refused(name, path)
    a = make_params(name, 0)
    b = twin(a)
    opt_a, opt_b = _make(name, a, path, capturable=True), _make(name, b, path)
    # the interpreter runs AdamP's and SGDP's channel reductions slowly; their branches are on
    # reductions, taken from the first step
    for step in range(3 if path == "fused" and name in PROJECTED else STEPS):
        set_grads(step, a, b)
        if step == 0:
            opt_a.step()
        else:
            with SyncDetector(monkeypatch):
                opt_a.step()
        opt_b.step()
    assert_params_close(a, b, rtol=1e-5, atol=1e-6)
    for p in a:
        st = opt_a.state[p]
        if "step" in st:
            assert st["step"].device == p.device and st["step"].dim() == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="a CUDA graph needs a GPU")
@pytest.mark.parametrize("path", ["loop", "foreach", "fused"])
@pytest.mark.parametrize("name", NAMES)
def test_capturable_step_in_a_cuda_graph(name, path):
    """The capturable step captured in a CUDA graph and replayed equals eager capturable steps."""
    if path == "fused" and os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("the Triton interpreter copies to the host; run with TRITON_INTERPRET=0 on a GPU")
    a = [p.detach().cuda().requires_grad_() for p in make_params(name, 0)]
    b = [p.detach().clone().requires_grad_() for p in a]
    opt_a, opt_b = _make(name, a, path, capturable=True), _make(name, b, path, capturable=True)
    for p in a:
        p.grad = torch.zeros_like(p)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):   # warm-up outside the graph: lazy state, kernels compiled
        for step in range(2):
            set_grads(step, a, b)
            opt_a.step()
            opt_b.step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        opt_a.step()
    for step in range(2, STEPS):
        set_grads(step, b)
        for p, q in zip(a, b):
            p.grad.copy_(q.grad)
        graph.replay()
        opt_b.step()
    torch.cuda.synchronize()
    assert_params_close(a, b, rtol=1e-5, atol=1e-6)

"""What the generated Triton kernels compile to on a real GPU (sm_90, Hopper), checked on a CPU-only
machine through Triton's front end and its bundled ptxas (as tests/test_kernel_compile.py):

* the full-block path is vectorised: a full block is loaded and stored without a mask, from
  offsets hinted contiguous and aligned (`tl.multiple_of`, `tl.max_contiguous`, `_ALIGNED`), so
  every stream moves in 128-bit accesses. Asserted on the PTX: with BLOCK = 1024 and 4 warps a
  thread owns 8 consecutive elements, i.e. 2 x 16 bytes of fp32 and 1 x 16 bytes of bf16 per
  stream, so each kernel has at least 2 (fp32) or 1 (bf16) `ld.global[.nc].v4.{b32,f32}` per
  stream it loads and as many `st.global.v4.{b32,f32}` per stream it stores (bf16: 8 packed
  halves in a v4.b32). The masked tail's scalar accesses are in the PTX too; nothing is
  asserted about them.
* no register spills (ptxas -v), and the registers are reported;
* int64 addressing: in the TTIR, every block of addresses a stream is loaded or stored through
  is an `i64` offset added to the tensor's base (`tt.addptr ..., tensor<1024xi64>`), so a tensor
  of more than 2^31 elements is addressed without overflow. (The element counts and starts come
  from int64 device tables, not from the kernel's signature, so no >2^31 signature is needed.)

One subprocess compiles every module's update kernel for fp32 (the phase kernels of two phased
specs, LAMB and SGDP, whose programs are cut at channels), and Adam's, AdamW's and LAMB's also for
bf16, with a fresh Triton cache (so ptxas runs and reports); the tests read its JSON report."""
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
KERNELS = sorted((ROOT / "generated").glob("*_triton.py"))
BF16 = {"adam_triton", "adamw_triton", "lamb_triton"}   # also compiled for bf16 (Adam; a phased spec)
PHASES = {"lamb_triton", "sgdp_triton"}   # every phase kernel compiled (others: the update kernel only)

SCRIPT = r'''
import contextlib, importlib.util, io, json, re, sys
import triton
from triton import knobs
from triton.compiler import ASTSource
from triton.backends.compiler import GPUTarget

knobs.nvidia.dump_ptxas_log = True   # ptxas -v output (registers, spills), printed by make_cubin
target = GPUTarget("cuda", 90, 32)
paths, bf16, phases = sys.argv[1].split(","), set(sys.argv[2].split(",")), set(sys.argv[3].split(","))
report = []
for path in paths:
    spec = importlib.util.spec_from_file_location("kernel_module", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    stem = path.rsplit("/", 1)[-1][:-3]
    for name, kernel in [(k, v) for k, v in vars(module).items() if k.endswith("_kernel")
                         and (stem in phases or "_phase" not in k)]:
        for dtype in ((0, 2) if stem in bf16 else (0,)):
            sig, consts = {}, {}
            for i, p in enumerate(kernel.params):
                if p.is_constexpr:
                    sig[p.name] = "constexpr"
                    consts[(i,)] = (1024 if p.name == "BLOCK" else 16 if p.name == "N_COLUMNS"
                                    else dtype if p.name.startswith("_DTYPE_") else False if p.name == "_ONE_ROW"
                                    else True)
                elif p.name.endswith("_ptrs") or p.name in ("numels", "work_start", "work_end"):
                    sig[p.name] = "*i64"
                elif p.name in ("work_tensor", "work_channel"):
                    sig[p.name] = "*i32"
                elif p.name in ("_n_tensors", "_n_channels"):
                    sig[p.name] = "i32"
                else:
                    sig[p.name] = "*fp32"
            log = io.StringIO()
            with contextlib.redirect_stdout(log):
                compiled = triton.compile(ASTSource(kernel, sig, consts), target=target)
            # the block function's stream accesses (the only load_stream/store_stream calls)
            block = getattr(module, name.replace("_kernel", "_block"))
            source = block.src
            report.append(dict(module=stem, kernel=name, dtype=dtype, ptx=compiled.asm["ptx"], ttir=compiled.asm["ttir"],
                               ptxas=log.getvalue(), warps=compiled.metadata.num_warps,
                               loads=len(re.findall(r"= load_stream\(", source)),
                               stores=len(re.findall(r"store_stream\(", source))))
json.dump(report, sys.stdout)
'''


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    env["TRITON_CACHE_DIR"] = str(tmp_path_factory.mktemp("triton_cache"))   # ptxas runs (and reports) every time
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", SCRIPT, ",".join(map(str, KERNELS)), ",".join(BF16),
                          ",".join(PHASES)],
                         capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    report = json.loads(out.stdout)
    print(f"\ncompiled {len(report)} kernels to PTX and cubin in {time.perf_counter() - start:.1f} s")
    return report


V4_LOAD = re.compile(r"\bld\.global(?:\.nc)?(?:\.L1::\w+|\.L2::\w+)*\.v4\.(?:b32|f32)\b")
V4_STORE = re.compile(r"\bst\.global(?:\.L1::\w+|\.L2::\w+)*\.v4\.(?:b32|f32)\b")


def test_every_module_compiled(compiled):
    assert {r["module"] for r in compiled} == {p.stem for p in KERNELS}
    assert {(r["module"], r["dtype"]) for r in compiled if r["dtype"] == 2} == {(m, 2) for m in BF16}


# in the TTIR, a block access without a mask (the full-block path) and one with (the tail); a
# value may be a result of an `scf.if` (`%2#1`: a stream stored under a per-tensor condition)
FULL_LOAD = re.compile(r"= tt\.load %[\w#]+ : tensor<1024x!tt\.ptr<")
TAIL_LOAD = re.compile(r"= tt\.load %[\w#]+, %[\w#]+, %[\w#]+ : tensor<1024x!tt\.ptr<")
FULL_STORE = re.compile(r"tt\.store %[\w#]+, %[\w#]+ : tensor<1024x!tt\.ptr<")
TAIL_STORE = re.compile(r"tt\.store %[\w#]+, %[\w#]+, %[\w#]+ : tensor<1024x!tt\.ptr<")


def test_full_blocks_use_128_bit_accesses(compiled):
    for r in compiled:
        assert r["warps"] == 4, r["kernel"]
        per_stream = 1024 * (4 if r["dtype"] == 0 else 2) // (16 * 32 * r["warps"])   # 16-byte vectors per thread
        # the streams the kernel really moves (a phase may load a stream whose values it never uses:
        # the compiler drops those), each once unmasked (full block) and once masked (tail)
        loads, stores = len(FULL_LOAD.findall(r["ttir"])), len(FULL_STORE.findall(r["ttir"]))
        assert loads == len(TAIL_LOAD.findall(r["ttir"])) and stores == len(TAIL_STORE.findall(r["ttir"])), r["kernel"]
        assert loads <= r["loads"] and stores == r["stores"], (r["kernel"], loads, r["loads"], stores, r["stores"])
        v4_loads, v4_stores = len(V4_LOAD.findall(r["ptx"])), len(V4_STORE.findall(r["ptx"]))
        assert v4_loads >= per_stream * loads, (r["kernel"], r["dtype"], v4_loads, loads)
        assert v4_stores >= per_stream * stores, (r["kernel"], r["dtype"], v4_stores, stores)
    # what the update kernels move: every one of them loads and stores streams
    assert all(len(FULL_LOAD.findall(r["ttir"])) >= 2 for r in compiled if r["kernel"].count("_phase") == 0)


def test_no_register_spills(compiled):
    lines = []
    assert sum(r["loads"] for r in compiled) > len(compiled)
    for r in compiled:
        regs = [int(x) for x in re.findall(r"Used (\d+) registers", r["ptxas"])]
        spills = [int(x) for x in re.findall(r"(\d+) bytes spill (?:stores|loads)", r["ptxas"])]
        assert regs and spills, (r["kernel"], r["ptxas"][-2000:])
        assert max(spills) == 0, (r["kernel"], r["dtype"], r["ptxas"])
        lines.append(f"{r['kernel']} {'bf16' if r['dtype'] else 'fp32'}: {max(regs)} registers, 0 spills")
    print("\n" + "\n".join(lines))


ADDPTR = re.compile(r"tt\.addptr %\S+, %\S+ : tensor<(\d+)x!tt\.ptr<(\w+)>>, tensor<\d+x(\w+)>")


def test_stream_addresses_are_int64(compiled):
    for r in compiled:
        blocks = ADDPTR.findall(r["ttir"])
        streams = [(n, elem, off) for n, elem, off in blocks if n == "1024"]
        assert len(streams) >= 2 * len(FULL_LOAD.findall(r["ttir"])), (r["kernel"], streams)   # full and tail path
        assert all(off == "i64" for _, _, off in streams), (r["kernel"], sorted(set(streams)))

"""The `optdsl` command: build, check, verify, bench, fuzz, show, docs, compare."""
from __future__ import annotations

import argparse
import os
import sys


def cmd_build(args) -> int:
    from .build import build
    warnings: list[str] = []
    stale = build(check=args.check, warnings=warnings)
    for warning in warnings:
        print(warning, file=sys.stderr)
    if args.check:
        if stale:
            print("generated/ is stale; run `optdsl build`. Out of date: " + ", ".join(stale), file=sys.stderr)
            return 1
        print("generated/ is up to date")
        return 0
    print(f"wrote {len(stale)} file(s)" + (": " + ", ".join(stale) if stale else " (all up to date)"))
    return 0


def cmd_check(args) -> int:
    from .checkfiles import check_files
    return check_files(args.files, werror=args.werror)


def cmd_verify(args) -> int:
    from .verify import main
    return main(args.specs, args.steps, full=args.full, progress=args.progress)


def cmd_bench(args) -> int:
    if args.gpu:
        if args.smoke:   # the smoke run's Triton kernels run in the interpreter: set before triton jits any
            os.environ["TRITON_INTERPRET"] = "1"
        from .bench_gpu import main as gpu_main
        return gpu_main(args)
    if args.sparse:
        from .bench_sparse import main as sparse_main
        return sparse_main(args)
    if args.host:
        from .bench_host import main as host_main
        return host_main(args.specs)
    if args.cpu_fused:
        from .bench_cpu import main as cpu_main
        return cpu_main(args.specs, args.repeat, args.rounds, args.large, compile_=args.compile,
                        compile_max_tensors=args.compile_max_tensors, smoke=args.smoke)
    from .bench import main
    return main(args)


def cmd_compose(args) -> int:
    """Print (or write, -o) the spec text of a wrapper around a spec: what `= wrapper(spec)` compiles."""
    from .compose import Source, compose
    from .diagnostics import CompileError
    from .loader import read_spec
    try:
        text = compose(Source(*read_spec(args.wrapper)), Source(*read_spec(args.spec)), args.name, args.doc)
    except CompileError as e:
        print(e.render(), file=sys.stderr)
        return 1
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.output:
        from .build import atomic_write
        from pathlib import Path
        atomic_write(Path(args.output), text)
    else:
        sys.stdout.write(text)
    return 0


def cmd_fuzz(args) -> int:
    from .fuzz.cli import main
    return main(args)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="optdsl", description="A compiler for optimizers: .opt spec -> torch.optim class + fused Triton kernel.")
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="regenerate generated/ from specs/")
    b.add_argument("--check", action="store_true", help="exit 1 if generated/ is stale, write nothing")
    b.set_defaults(func=cmd_build)
    c = sub.add_parser("check", help="parse and check spec files, printing diagnostics")
    c.add_argument("files", nargs="+")
    c.add_argument("--werror", action="store_true", help="treat warnings (unused hypers, flags, states) as errors")
    c.set_defaults(func=cmd_check)
    v = sub.add_parser("verify", help="every path of every spec against its reference (every flag level at least once; --full: the whole grid); prints a table")
    v.add_argument("specs", nargs="*", help="spec class names (default: all)")
    v.add_argument("--steps", type=int, default=None,
                   help="steps per run (default: 20, a few specs more, on small tensors; --full: 200)")
    v.add_argument("--full", action="store_true",
                   help="the whole flag grid of every spec over 200 steps on the full shapes (slow in the interpreter)")
    v.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar on stderr")
    v.set_defaults(func=cmd_verify)
    be = sub.add_parser("bench", help="step-time ratios against torch, measured side by side (CPU; --gpu: a CUDA device)")
    be.add_argument("specs", nargs="*")
    be.add_argument("--repeat", type=int, default=30, help="timed steps per measurement")
    be.add_argument("--rounds", type=int, default=5, help="alternating rounds; the median is reported")
    be.add_argument("--cpu-fused", action="store_true",
                    help="the fused C++ backend vs torch foreach, fused=True, DeepSpeedCPUAdam and torch.compile on "
                         "CPU, on the issue's mixes (default Adam, AdamW, SGD, Lion, RAdam, Adagrad)")
    be.add_argument("--large", action="store_true", help="with --cpu-fused: add the 1 x 2^26 mix")
    be.add_argument("--gpu", action="store_true",
                    help="the fused Triton kernels vs torch foreach, fused=True and torch.compile on a CUDA device "
                         "(Adam, AdamW, SGD, Lion; default all); writes <out>/<device>.json and .md")
    be.add_argument("--smoke", action="store_true",
                    help="with --gpu: the whole harness at tiny sizes on CPU under the Triton interpreter; "
                         "with --cpu-fused: the same table on tiny mixes (seconds)")
    be.add_argument("--out", default="bench/results", help="with --gpu: the results directory (default bench/results)")
    be.add_argument("--mix", action="append", default=[],
                    help="with --gpu: only the mixes whose name contains this (repeatable; e.g. 2^24, Llama, odd)")
    be.add_argument("--compile-max-tensors", type=int, default=None,
                    help="with --gpu or --cpu-fused: skip the torch.compile contender on mixes of more tensors "
                         "(its compile time; --cpu-fused default 100)")
    be.add_argument("--no-compile", dest="compile", action="store_false",
                    help="with --cpu-fused: no torch.compile contender")
    be.add_argument("--sparse", action="store_true",
                    help="SparseAdam on an embedding table's sparse gradients against torch.optim.SparseAdam "
                         "(loop, foreach, fused C++) and dense Adam; --smoke: a tiny table")
    be.add_argument("--host", action="store_true",
                    help="host time of one fused step over 2000 tensors, the kernel launch a no-op (default Adam)")
    be.set_defaults(func=cmd_bench)
    f = sub.add_parser("fuzz", help="random programs through every backend; text mutations through the checker")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--count", type=int, default=100)
    f.add_argument("--time", type=float, default=None, help="stop after this many seconds")
    f.add_argument("--mode", choices=("programs", "text", "both", "lbfgs"), default="both",
                   help="both: programs and text; lbfgs: random problems through optdsl.lbfgs.LBFGS and torch's, bit for bit")
    f.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar on stderr")
    f.set_defaults(func=cmd_fuzz)
    co = sub.add_parser("compose", help="the spec text of a wrapper around a spec (what `optimizer N = w(spec)` compiles)")
    co.add_argument("wrapper", help="a wrapper: a shipped name (lookahead) or a .opt path")
    co.add_argument("spec", help="the spec it wraps: a shipped name (adam), a .opt path, or a composition")
    co.add_argument("--name", help="the class name (default: the two joined, LookaheadAdam)")
    co.add_argument("--doc", help="the one-line doc")
    co.add_argument("-o", "--output", help="write the text to this file (atomically) instead of stdout")
    co.set_defaults(func=cmd_compose)
    from .show.command import add_parser as add_show
    add_show(sub)
    from .docgen.command import add_parser as add_docs
    add_docs(sub)
    from .convergence import add_compare_parser
    add_compare_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:
        # the reader went away (`optdsl show adam | head`): stop quietly, as `cat` does
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())

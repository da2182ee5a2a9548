"""Re-run saved fuzz cases: `python -m optdsl.fuzz.replay FILE.opt...` (tests/fuzz_corpus/ holds them).

Each file is a spec with a `# fuzz-case: {...}` first line saying how to run it; the
outcome of every path against the IR interpreter is printed. Exit status 1 if any fails."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path


def replay(path: str | os.PathLike, cache: str | None = None, verbose: bool = True):
    from .execute import Case, run_case
    case = Case.loads(Path(path).read_text(encoding="utf-8"))
    out = run_case(case, cache=cache or tempfile.mkdtemp(prefix="optdsl-replay-"))
    if verbose:
        print(f"{path}: {'ok' if out.ok else 'FAIL'}: {out.summary()}")
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print(__doc__)
        return 2
    os.environ.setdefault("TRITON_INTERPRET", "1")
    cache = tempfile.mkdtemp(prefix="optdsl-replay-")
    failed = sum(not replay(p, cache).ok for p in argv)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""`optdsl docs [--check]`: write (or compare) docs/optimizers/."""
from __future__ import annotations

import sys
from pathlib import Path


def plot_hook(args):
    """The convergence-plot writer (optdsl.convergence) unless --no-plots or --check."""
    if args.check or args.no_plots:
        return None
    try:
        from ..convergence import write_convergence_plot
    except ModuleNotFoundError as e:   # matplotlib or scikit-learn: the `docs` extra
        raise SystemExit(f"optdsl docs: the convergence plots need {e.name} (pip install 'optdsl[docs]'), "
                         "or pass --no-plots") from e
    return write_convergence_plot


def main(args) -> int:
    from .pages import default_dir, write_docs
    out_dir = Path(args.out) if args.out else default_dir()
    stale = write_docs(out_dir, plot=plot_hook(args), check=args.check, names=args.specs or None)
    if args.check:
        if stale:
            print(f"{out_dir} is stale; run `optdsl docs`. Out of date: " + ", ".join(stale), file=sys.stderr)
            return 1
        print(f"{out_dir}: every page is up to date (PNGs not checked)", file=sys.stderr)
        return 0
    print(f"wrote {len(stale)} page(s)" + (": " + ", ".join(stale) if stale else " (all up to date)"), file=sys.stderr)
    return 0


def add_parser(sub) -> None:
    d = sub.add_parser("docs", help="write docs/optimizers/: a page per shipped spec and an index")
    d.add_argument("specs", nargs="*", help="spec file stems to write (default: all, and the index)")
    d.add_argument("--check", action="store_true", help="exit 1 if any page's text is stale; write nothing, train nothing")
    d.add_argument("--out", help="the folder (default: docs/optimizers/ of this checkout)")
    d.add_argument("--no-plots", action="store_true", help="write the pages only; leave the PNGs as they are")
    d.set_defaults(func=main)

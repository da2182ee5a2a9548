"""The fuzzer's `sparse rows` (optdsl.fuzz.programs.cases(sparse=p)): a drawn program declares it
where the checker accepts it, and its case's gradients are sparse (optdsl.fuzz.execute.make_data
draws them: COO over dim 0's rows, some repeated, some untouched)."""
from __future__ import annotations

from hypothesis import strategies as st


def declare_sparse_rows(draw, case) -> None:
    """`sparse rows` declared before the update, where the checker accepts it (no reduction, no
    shape read, no `empty` state), and the case's gradients made sparse (execute.make_data);
    `sparse rows only` where every tensor can have a sparse gradient (rank 1 or more, rows)."""
    from ..compiler import compile_ir
    from ..diagnostics import CompileError
    every = all(len(s) >= 1 and s[0] > 0 for g in case.groups for s in g.shapes)
    decl = "sparse rows only" if every and draw(st.booleans()) else "sparse rows"
    text = _declare_before_update(case.text, decl)
    try:
        compile_ir(text, "<fuzz>")
    except CompileError:
        return
    case.text = text
    case.twin = _declare_before_update(case.twin, decl)   # type: ignore[attr-defined]
    case.sparse = True


def _declare_before_update(text: str, decl: str) -> str:
    at = text.index("update {")
    return text[:at] + decl + "\n" + text[at:]

import os
import sys
from pathlib import Path

# The fused kernels run on CPU tensors through the Triton interpreter; it must be
# switched on before any kernel module is imported.
os.environ.setdefault("TRITON_INTERPRET", "1")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The longest tests, started first: under `pytest -n 2 --dist worksteal` (the README's test
# command) a long test that starts last leaves the other worker idle until it ends. Order only;
# no test depends on another.
LONGEST_FIRST = (
    "tests/test_fuzz.py::test_generated_programs_agree_with_the_interpreter_on_every_path",
    "tests/test_fuzz.py::test_wrapped_programs_agree_with_the_interpreter_on_every_path",
    "tests/test_interp.py::test_shipped_spec_matches_interpreter[AdamP",
    "tests/test_interp.py::test_shipped_spec_matches_interpreter[SGDP",
    "tests/test_distributed.py",
    "tests/test_fuzz.py::test_text_mutations",
    "tests/test_kernel_ptx.py",
)


def pytest_collection_modifyitems(items):
    def rank(item):
        return next((k for k, prefix in enumerate(LONGEST_FIRST) if item.nodeid.startswith(prefix)), len(LONGEST_FIRST))
    items.sort(key=rank)   # stable: the rest keep their order

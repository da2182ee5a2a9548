import os
import sys
from pathlib import Path

# The fused kernels run on CPU tensors through the Triton interpreter; it must be
# switched on before any kernel module is imported.
os.environ.setdefault("TRITON_INTERPRET", "1")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

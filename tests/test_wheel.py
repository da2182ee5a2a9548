"""The wheel carries grammar, templates, specs and generated code: installed into a
fresh virtual environment, away from the source tree, it still works."""
import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = r'''
import os, sys
assert "optdsl" not in os.listdir(os.getcwd())
import torch, optdsl
from optdsl.optim import Adam, SGD
assert "site-packages" in optdsl.__file__, optdsl.__file__
p = torch.ones(4, requires_grad=True)
p.grad = torch.ones(4)
Adam([p], lr=0.1).step()
assert abs(p[0].item() - 0.9) < 1e-6, p
Toy = optdsl.load("""optimizer Toy "x"
hyper lr = 0.5
update { param = param - lr * grad }
""")
q = torch.ones(2, requires_grad=True)
q.grad = torch.ones(2)
Toy([q]).step()
assert q.tolist() == [0.5, 0.5]
# the shipped wrappers travel too: a composition of two shipped specs loads from anywhere
ToyLookahead = optdsl.load("optimizer ToyLookahead = lookahead(sgd)")
from optdsl.optim import LookaheadAdam, EmaAdamW
r = torch.ones(2, requires_grad=True)
r.grad = torch.ones(2)
ToyLookahead([r], lr=0.5).step()
assert r.tolist() == [0.5, 0.5]
# the .opt lexer is registered with Pygments by the wheel's entry point
from pygments.lexers import get_lexer_by_name
assert type(get_lexer_by_name("opt")).__module__ == "optdsl.show.lexer"
from optdsl.cli import main
assert main(["show", "adam", "--no-color"]) == 0
print("wheel ok")
'''


def test_wheel_installs_and_runs_in_a_fresh_venv(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(dist), str(ROOT)], check=True, cwd=tmp_path)
    wheel = next(dist.glob("optdsl-*.whl"))
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    py = env_dir / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # The new venv reaches torch & co. through a .pth to this interpreter's packages, but not the source tree.
    ours = sysconfig.get_paths()["purelib"]
    Path(site, "deps.pth").write_text(ours + "\n")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", site, str(wheel)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env["OPTDSL_CACHE"] = str(tmp_path / "cache")
    out = subprocess.run([str(py), "-c", SCRIPT], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "wheel ok" in out.stdout

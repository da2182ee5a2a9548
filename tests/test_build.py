"""`optdsl build` is deterministic and atomic; `build --check` catches staleness;
`optdsl.load` compiles once per content and caches."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import optdsl
from optdsl import build as build_mod
from optdsl.compiler import compile_ir, compile_spec
from optdsl.diagnostics import CompileError
from optdsl.ir import verify

ROOT = Path(__file__).resolve().parent.parent
TOY = '''optimizer Toy "signSGD with momentum"
hyper lr = 0.01 where lr >= 0
hyper beta = 0.9 where 0 <= beta < 1
state m = zeros
update {
  m = beta * m + (1 - beta) * grad
  param = param - lr * sign(m)
}
'''


def test_generated_is_fresh():
    assert build_mod.build(check=True) == []


def test_build_is_deterministic():
    first = build_mod.render_all()
    second = build_mod.render_all()
    assert first == second
    for name, text in first.items():
        assert (ROOT / "generated" / name).read_text() == text


def test_build_check_reports_a_stale_file(tmp_path):
    out = tmp_path / "generated"
    assert sorted(build_mod.build(out_dir=out)) == sorted(build_mod.render_all())
    assert build_mod.build(out_dir=out, check=True) == []
    (out / "adam.py").write_text((out / "adam.py").read_text() + "# edited\n")
    (out / "leftover.py").write_text("")
    assert set(build_mod.build(out_dir=out, check=True)) == {"adam.py", "leftover.py"}
    assert (out / "leftover.py").exists()       # --check writes nothing


def test_atomic_write_leaves_the_old_file_when_interrupted(tmp_path, monkeypatch):
    target = tmp_path / "x.py"
    target.write_text("old")

    def crash(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        build_mod.atomic_write(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.py"]   # no temporary left behind


def test_ir_verifier_accepts_every_shipped_spec_after_every_pass():
    for path in build_mod.spec_files():
        verify(compile_ir(path.read_text(), path.name, verify_ir=True))


def test_load_text_and_path_and_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OPTDSL_CACHE", str(tmp_path / "cache"))
    cls = optdsl.load(TOY)
    assert cls.__name__ == "Toy" and issubclass(cls, torch.optim.Optimizer)
    assert optdsl.load(TOY) is cls                    # cached by content hash
    spec_file = tmp_path / "toy.opt"
    spec_file.write_text(TOY)
    assert optdsl.load(spec_file) is cls
    assert optdsl.load(str(spec_file)) is cls
    p = torch.ones(3, requires_grad=True)
    p.grad = torch.tensor([1.0, -1.0, 0.0])
    cls([p], lr=0.5).step()
    assert p.tolist() == [0.5, 1.5, 1.0]
    with pytest.raises(ValueError, match="Invalid beta value: 1.5"):
        cls([p], beta=1.5)


def test_load_of_a_bad_spec_raises_compile_error():
    with pytest.raises(CompileError, match="unknown name"):
        optdsl.load('optimizer Bad "x" update { param = parm }')


def test_cli_check_and_build_check():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ok = subprocess.run([sys.executable, "-m", "optdsl", "check", *map(str, build_mod.spec_files())],
                        capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    assert "adam.opt: ok" in ok.stdout
    stale = subprocess.run([sys.executable, "-m", "optdsl", "build", "--check"], capture_output=True, text=True, env=env)
    assert stale.returncode == 0, stale.stderr


def test_cli_check_prints_diagnostics_and_fails(tmp_path):
    bad = tmp_path / "bad.opt"
    bad.write_text('optimizer Bad "x"\nupdate {\n  param = param - lr * grad\n}\n')
    binary = tmp_path / "bin.opt"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "optdsl", "check", str(bad), str(binary)], capture_output=True, text=True, env=env)
    assert out.returncode == 1
    assert f"{bad}:3:19: error: unknown name 'lr'" in out.stderr
    assert "^~" in out.stderr
    assert f"{binary}:1:1: error: not UTF-8 text" in out.stderr
    assert "Traceback" not in out.stderr


def test_cli_verify_prints_a_table(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "optdsl", "verify", "SGD", "--steps", "3"], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:4] == ["spec", "path", "against", "flags"]
    assert any(" fused " in line and line.rstrip().endswith("PASS") for line in lines)
    assert "0 failed" in lines[-1]


def test_generated_adam_reads_like_torch():
    text = (ROOT / "generated" / "adam.py").read_text()
    for line in ("exp_avg.lerp_(g, (1.0 - betas[0]))",
                 "exp_avg_sq.mul_(betas[1]).addcmul_(g, g, value=(1.0 - betas[1]))",
                 "param.addcdiv_(exp_avg, denom, value=(-step_size))",
                 "def _single_tensor_adam(", "def _multi_tensor_adam(", "def _fused_adam("):
        assert line in text

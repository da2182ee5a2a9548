"""Progress goes to stderr, so the tables and reports on stdout stay pipeable."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*argv):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TRITON_INTERPRET": "1"}
    return subprocess.run([sys.executable, "-m", "optdsl", *argv], capture_output=True, text=True, env=env)


def test_verify_progress_on_stderr_table_on_stdout():
    out = _run("verify", "Lion", "--steps", "2")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.splitlines()[0].split()[:2] == ["spec", "path"]
    assert "━" not in out.stdout and "verify: Lion done" not in out.stdout
    assert "verify: Lion done, 8/8 runs" in out.stderr          # not a terminal: one line per spec (4 paths x 2)
    assert "8/8" in out.stderr.splitlines()[-1]                   # and the bar's final state


def test_verify_no_progress():
    out = _run("verify", "Lion", "--steps", "2", "--no-progress")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "━" not in out.stderr and "verify:" not in out.stderr and "8/8" not in out.stderr


def test_fuzz_progress_counts_inputs_and_failures_on_stderr():
    out = _run("fuzz", "--count", "3", "--mode", "text")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "text: 3 text inputs" in out.stdout
    bar = out.stderr.splitlines()[-1]
    assert bar.split()[0] == "text" and "3/3" in bar and "0 failures" in bar

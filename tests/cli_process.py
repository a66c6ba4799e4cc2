"""Run `python -m app.cli ...` in a child process; a child that hangs shows where, in the test's failure."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_cli(args: Sequence[str], *, env: Mapping[str, str] | None = None,
            timeout: float = 240.0) -> subprocess.CompletedProcess:
    """`lunglens ARGS` from the repository root, its output captured as text.

    Past `timeout` the child gets SIGABRT, so that Python's fault handler writes the stack of every thread to
    its stderr, and the test fails with that stderr instead of a bare `TimeoutExpired`.
    """
    child_env = dict(os.environ if env is None else env, PYTHONFAULTHANDLER="1")
    command = [sys.executable, "-m", "app.cli", *args]
    with subprocess.Popen(command, cwd=ROOT, env=child_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
            hung = False
        except subprocess.TimeoutExpired:
            hung = True
        if hung:
            proc.send_signal(signal.SIGABRT)
            try:
                out, err = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
            pytest.fail(f"`lunglens {' '.join(args)}` still ran after {timeout:.0f} s; its threads then:\n{err}"
                        f"\n--- stdout ---\n{out}", pytrace=False)
    return subprocess.CompletedProcess(command, proc.returncode, out, err)

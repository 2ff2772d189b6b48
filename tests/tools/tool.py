"""Run the installed `kubectl-whereabouts` as an operator (or kubectl) would, and compare tables with golden files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

TOOL = (
    shutil.which("kubectl-whereabouts", path=os.path.dirname(sys.executable))
    or shutil.which("kubectl-whereabouts")
    or "kubectl-whereabouts"
)
GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "tools"


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str

    def ok(self) -> Ran:
        assert self.returncode == 0, f"exit {self.returncode}\n{self.stdout}\n{self.stderr}"
        return self


def run_tool(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> Ran:
    """The executable with `args`; no $KUBECONFIG and a home of its own unless `env` says otherwise, so that
    nothing of the machine's leaks in; a traceback is never an answer."""
    environ = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "HOME")}
    environ["HOME"] = "/nonexistent"
    environ.update(env or {})
    proc = subprocess.run([TOOL, *args], capture_output=True, text=True, env=environ, timeout=timeout)
    assert "Traceback" not in proc.stderr, proc.stderr
    return Ran(proc.returncode, proc.stdout, proc.stderr)


def golden(name: str, text: str) -> None:
    """`text` equals tests/golden/tools/<name>; WHEREABOUTS_GOLDEN_UPDATE=1 rewrites the file instead."""
    path = GOLDEN / name
    if os.environ.get("WHEREABOUTS_GOLDEN_UPDATE"):
        path.write_text(text)
    assert path.exists(), f"no golden file {path} (run with WHEREABOUTS_GOLDEN_UPDATE=1 once and review it)"
    assert text == path.read_text(), f"differs from {path}:\n{text}"

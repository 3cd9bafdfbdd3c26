"""The import package `supervisor` is also supervisord's (issue 11): installed into one environment, the two
overwrite each other's files. The command line says so in one line instead of an ImportError traceback.

Real installs in a scratch virtualenv of the test's own: supervisord from PyPI, worker-supervisor from a copy of
this checkout (built as pip builds it). Skipped with a reason when PyPI cannot be reached, except under CI=true.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def pip(venv: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", *args],
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)


def need(result: subprocess.CompletedProcess[str], doing: str) -> None:
    """Skip (or fail under CI) when pip could not do it: most likely no way to PyPI from here."""
    if result.returncode == 0:
        return
    last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
    message = f"pip could not {doing}: {last}"
    if os.environ.get("CI") == "true":
        pytest.fail(message + " (CI must run this test, not skip it)", pytrace=False)
    pytest.skip(message)


def ours(tmp_path: Path) -> Path:
    """A copy of the checkout's package source (the working tree's files, not its build leftovers)."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "supervisor", source / "supervisor", ignore=shutil.ignore_patterns("__pycache__"))
    return source


def command(venv: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {n: v for n, v in os.environ.items() if not n.startswith(("SUPERVISOR_", "PYTHON"))}
    return subprocess.run([str(venv / "bin" / args[0]), *args[1:]], cwd=venv, env=env, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)


def one_line(result: subprocess.CompletedProcess[str], code: int, kind: str) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    (line,) = result.stderr.splitlines()
    assert f": {kind}: " in line, line
    for fragment in ("supervisord", "pip package `supervisor`", "separate environments"):
        assert fragment in line, (fragment, line)
    return line


def test_issue_11_supervisord_installed_over_worker_supervisor_is_one_line(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=120)
    need(pip(venv, "install", str(ours(tmp_path))), "build and install worker-supervisor and its requirements")
    assert command(venv, "worker-supervisor", "--version").returncode == 0
    need(pip(venv, "install", "--no-deps", "supervisor"), "install supervisord (pip package `supervisor`) from PyPI")

    # supervisord's files replaced our __init__.py and process.py: both ways in say so in one line.
    for args in (("worker-supervisor", "status"), ("python", "-m", "supervisor", "--version")):
        line = one_line(command(venv, *args), 1, "error")
        assert "cannot run" in line and "replaced" in line, line

    # Removing supervisord takes the files it shared with us: still one line, naming the likely cause.
    assert pip(venv, "uninstall", "--yes", "supervisor").returncode == 0
    line = one_line(command(venv, "worker-supervisor", "--version"), 1, "error")
    assert "__init__.py" in line, line

    # Installed the other way round, ours wins the shared files and runs, and warns that supervisord does not.
    need(pip(venv, "install", "--no-deps", "supervisor"), "install supervisord again")
    need(pip(venv, "install", "--no-deps", "--force-reinstall", str(tmp_path / "src")), "reinstall worker-supervisor")
    result = command(venv, "worker-supervisor", "--version")
    one_line(result, 0, "warning")
    assert result.stdout.strip() == "worker-supervisor 0.1.0"


def test_a_healthy_install_says_nothing(tmp_path: Path) -> None:
    # The development install (editable) lists no files to compare: the check must stay quiet and cheap there.
    result = subprocess.run([sys.executable, "-m", "supervisor", "--version"], capture_output=True, text=True,
                            timeout=60, cwd=tmp_path)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr

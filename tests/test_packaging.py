"""What the package ships and what the Makefile installs: real builds and real make dry runs, no parsing of guesses."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_ships_py_typed_so_type_checkers_read_our_annotations(tmp_path: Path) -> None:
    # Built from a copy: a build writes build/ and *.egg-info beside the sources, and others work in this tree.
    source = tmp_path / "source"
    shutil.copytree(ROOT / "supervisor", source / "supervisor", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path / "wheel"), str(source)],
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = (tmp_path / "wheel").glob("worker_supervisor-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "supervisor/py.typed" in names, names
    assert "supervisor/operate/cli.py" in names
    # The web page's static files are package data: a wheel without them serves pages with no style or script.
    assert {"supervisor/web/static/app.js", "supervisor/web/static/style.css", "supervisor/web/static/icon.svg"} <= set(names)


def make_dry_run(target: str, tmp_path: Path) -> list[str]:
    """The commands `make TARGET` would run for a fresh virtualenv (make -n: nothing is run or installed)."""
    result = subprocess.run(
        ["make", "-n", target, f"VENV={tmp_path / 'venv'}"], cwd=ROOT, capture_output=True, text=True, timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def installs(lines: list[str]) -> list[str]:
    return [line for line in lines if " pip install " in line and "--upgrade pip" not in line]


def test_make_run_installs_what_running_needs_and_not_the_test_tools(tmp_path: Path) -> None:
    lines = installs(make_dry_run("run", tmp_path))
    assert lines and all("'.[postgres]'" in line for line in lines), lines
    assert not any("dev" in line for line in lines), lines


def test_make_test_and_lint_add_the_test_tools(tmp_path: Path) -> None:
    for target in ("test", "lint"):
        lines = installs(make_dry_run(target, tmp_path))
        assert any("'.[dev,postgres]'" in line for line in lines), (target, lines)

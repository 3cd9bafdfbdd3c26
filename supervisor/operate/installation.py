"""Tell whether the import package `supervisor` is ours, whole, or shared with supervisord's.

supervisord's pip package is named `supervisor` and installs an import package `supervisor` too. pip installs
both into the same directory without a word: the one installed last overwrites the files both have
(`__init__.py`, `process.py`), and removing one takes the shared files from the other. What follows is an
ImportError traceback far from its cause, in whichever of the two was installed first. So the command line asks
first, with the standard library only (any module of ours may be the one replaced), and says so in one line.

The installer's own record is the witness: the RECORD of worker-supervisor's dist-info lists each of our files
with its hash, so a file that is missing or differs was taken or replaced. An editable install (a checkout) lists
no files to compare, and then only the package's own `__init__.py` is looked at.
"""
from __future__ import annotations

import base64
import hashlib
import os
import sys
from importlib import metadata

OURS = "worker-supervisor"
THEIRS = "supervisor"  # supervisord's distribution name
ADVICE = "keep worker-supervisor and supervisord in separate environments (a virtualenv each), then reinstall it"


def clash() -> tuple[str, bool] | None:
    """Say what is wrong with the `supervisor` package, and whether it is fatal; None when all is well."""
    package = sys.modules.get("supervisor")
    where = os.path.dirname(getattr(package, "__file__", None) or "") or _package_dir()
    theirs = _installed_beside(THEIRS, where)
    broken = package is None or not hasattr(package, "__version__")
    # Hashing every file of ours costs each command a read of the whole package: only when something points at
    # damage (supervisord beside us, or our __init__ not ours) is it worth saying which files.
    damaged = _damaged_files() if broken or theirs else []
    if broken or damaged:
        what = ", ".join(damaged[:3]) + (f" and {len(damaged) - 3} more" if len(damaged) > 3 else "") if damaged \
            else "__init__.py"
        if theirs:
            cause = f"supervisord (pip package `supervisor`) is installed in the same directory {where} and replaced {what}"
        else:
            cause = (f"its files in {where} were replaced or removed ({what}), as when supervisord (pip package "
                     "`supervisor`) shared the directory and took them on its removal")
        return f"worker-supervisor cannot run: {cause}; {ADVICE}", True
    if theirs:
        return (f"supervisord (pip package `supervisor`) is installed in the same directory {where} as "
                f"worker-supervisor, and the two overwrite each other's files (supervisord's process.py is ours now); "
                f"{ADVICE}"), False
    return None


def program(argv0: str) -> str:
    """The name the user ran us by (as cli.program_name says it, which cannot be imported before this check)."""
    name = os.path.basename(argv0)
    return f"{os.path.basename(sys.executable) or 'python'} -m supervisor" if name == "__main__.py" else name or OURS


def check(prog: str) -> None:
    """Print one line if the package is shared or damaged; exit with status 1 if worker-supervisor cannot run."""
    found = clash()
    if found is None:
        return
    message, fatal = found
    print(f"{prog}: {'error' if fatal else 'warning'}: {message}", file=sys.stderr)
    if fatal:
        raise SystemExit(1)


def _package_dir() -> str:
    spec = sys.modules.get("supervisor")
    paths = list(getattr(spec, "__path__", []) or [])
    return paths[0] if paths else "?"


def _installed_beside(name: str, where: str) -> bool:
    """Tell whether distribution `name` is installed with its `supervisor/__init__.py` in directory `where`."""
    try:
        files = metadata.distribution(name).files or []
    except metadata.PackageNotFoundError:
        return False
    for file in files:
        if file.parts == ("supervisor", "__init__.py"):
            return os.path.realpath(os.path.dirname(str(file.locate()))) == os.path.realpath(where)
    return False


def _damaged_files() -> list[str]:
    """Our package's .py files whose content is not what our installer recorded (missing or replaced)."""
    try:
        files = metadata.distribution(OURS).files or []
    except metadata.PackageNotFoundError:
        return []  # run from a source tree: nothing installed to compare with
    damaged = []
    for file in files:
        if not (file.parts and file.parts[0] == "supervisor" and file.suffix == ".py" and file.hash):
            continue
        try:
            with open(file.locate(), "rb") as f:
                digest = hashlib.new(file.hash.mode, f.read()).digest()
        except OSError:
            damaged.append(file.name)
            continue
        if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != file.hash.value:
            damaged.append(file.name)
    return damaged

"""The systemd unit we ship (worker-supervisor.service beside this module), made ready for this installation.

`worker-supervisor systemd-unit` prints it with ExecStart naming this interpreter (the virtualenv the package
is installed in) and the config file the command found, and User/Group set when asked. Everything else is the
shipped file as it is, so what is documented there (KillMode=mixed, OOMPolicy=continue, the watchdog) holds.
"""
from __future__ import annotations

import os
import re
import sys
from importlib import resources

UNIT_FILE = "worker-supervisor.service"


def shipped_unit() -> str:
    """The unit file as shipped with the package."""
    return resources.files("supervisor.operate").joinpath(UNIT_FILE).read_text()


def render_unit(config_file: str | None, user: str | None = None) -> str:
    """The shipped unit with ExecStart (and User/Group) for this installation."""
    exec_start = [sys.executable, "-m", "supervisor", "run"]
    if config_file is not None:
        exec_start += ["--config", os.path.abspath(config_file)]
    unit = re.sub(r"(?m)^ExecStart=.*$", lambda _: "ExecStart=" + " ".join(map(_quoted, exec_start)), shipped_unit())
    if user is not None:
        unit = re.sub(r"(?m)^User=.*$", lambda _: f"User={user}", unit)
        unit = re.sub(r"(?m)^Group=.*$", lambda _: f"Group={user}", unit)
    return unit


def _quoted(word: str) -> str:
    """A word of a systemd command line: quoted when it holds a space or a quote (systemd.service, "Command
    lines"); `$` and `%` doubled, so that systemd takes them literally."""
    word = word.replace("%", "%%").replace("$", "$$")
    if re.search(r"[\s\"'\\]", word):
        return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return word

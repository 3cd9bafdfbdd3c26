"""The start every helper process of the supervisor shares (the recorder, the coordinator, the notifier).

Each is `python -m MODULE --control-fd N --supervisor-pid P ...`, started by supervise/helper.py: it takes a title
for `ps`, dies with the supervisor (so it never outlives it, whatever it is doing), leaves Ctrl-C to the
supervisor, and talks to it over the channel on fd N.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket

from .process import die_with_parent
from .process_title import set_title


def helper_arguments(module: str) -> argparse.ArgumentParser:
    """The parser of a helper's command line, with the two arguments every helper takes."""
    parser = argparse.ArgumentParser(prog=module)
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--supervisor-pid", type=int, required=True)
    return parser


def become_helper(args: argparse.Namespace, role: str) -> socket.socket:
    """Take the helper's title, die with the supervisor, ignore Ctrl-C; return the channel to the supervisor."""
    set_title(role, f"ws-{role}")
    if not die_with_parent(signal.SIGKILL, args.supervisor_pid):
        os._exit(1)  # the supervisor is gone already
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the supervisor's to handle
    control = socket.socket(fileno=args.control_fd)
    os.set_inheritable(control.fileno(), False)
    return control

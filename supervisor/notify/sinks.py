"""Delivering one event to one sink, within a timeout; each says how it went in a few words.

- command: the event as JSON on stdin, with SUPERVISOR_EVENT, SUPERVISOR_WORKER, SUPERVISOR_OUTCOME,
  SUPERVISOR_RUN_ID, SUPERVISOR_EXIT_CODE and SUPERVISOR_SIGNAL in its environment; exit 0 is delivered.
- webhook: a JSON POST of the event (its "text" is what Slack and compatible chats show); 2xx is delivered.
"""
from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
from typing import Any

from .. import __version__


def deliver(sink: str, target: Any, event: dict[str, Any], timeout: float) -> str:
    """Deliver `event`; return `delivered`, or what went wrong (`refused: ...`, `timed out after Ns`)."""
    if sink == "command":
        return _command(list(target), event, timeout)
    if sink == "webhook":
        return _webhook(str(target), event, timeout)
    return f"refused: unknown sink {sink!r}"


def _command(argv: list[str], event: dict[str, Any], timeout: float) -> str:
    run = event.get("run") or {}
    env = {**os.environ, "SUPERVISOR_EVENT": str(event.get("event", "")), "SUPERVISOR_WORKER": str(event.get("worker") or ""),
           "SUPERVISOR_OUTCOME": str(run.get("outcome") or ""), "SUPERVISOR_RUN_ID": str(run.get("id") or ""),
           "SUPERVISOR_EXIT_CODE": "" if run.get("exit_code") is None else str(run["exit_code"]),
           "SUPERVISOR_SIGNAL": str(run.get("signal") or "")}
    try:
        done = subprocess.run(argv, input=json.dumps(event).encode(), env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, timeout=timeout, start_new_session=True)
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout:g}s"
    except OSError as exc:
        return f"refused: cannot run {argv[0]}: {exc.strerror or exc}"
    if done.returncode != 0:
        said = done.stderr.decode(errors="replace").strip().splitlines()
        return f"refused: exit status {done.returncode}" + (f": {said[-1][:200]}" if said else "")
    return "delivered"


def _webhook(url: str, event: dict[str, Any], timeout: float) -> str:
    request = urllib.request.Request(url, data=json.dumps(event).encode(), method="POST", headers={
        "Content-Type": "application/json", "User-Agent": f"worker-supervisor/{__version__}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - the operator's URL
            response.read(65536)
            return "delivered" if 200 <= response.status < 300 else f"refused: HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return f"refused: HTTP {exc.code}"
    except TimeoutError:
        return f"timed out after {timeout:g}s"
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError) or "timed out" in str(reason):
            return f"timed out after {timeout:g}s"
        return f"refused: {getattr(reason, 'strerror', None) or reason}"
    except OSError as exc:
        return f"refused: {exc.strerror or exc}"

"""Delivering one event to one sink, within a timeout; each says how it went in a few words.

- command: the event as JSON on stdin, with SUPERVISOR_EVENT, SUPERVISOR_WORKER, SUPERVISOR_OUTCOME,
  SUPERVISOR_RUN_ID, SUPERVISOR_EXIT_CODE and SUPERVISOR_SIGNAL in its environment; exit 0 is delivered.
- webhook: a JSON POST of the event (its "text" is what Slack and compatible chats show); 2xx is delivered.
- ping: a dead man's switch in the manner of Healthchecks: `URL/start?rid=RUN` when a run starts, `URL?rid=RUN`
  when it succeeds, `URL/fail?rid=RUN` with the stderr tail as body when it fails (one run id across both).
- mail: a plain mail (the text as subject, the facts, traceback and stderr tail as body), through `smtp_host`
  or through sendmail -t (cron's way).
"""
from __future__ import annotations

import json
import os
import smtplib
import socket
import subprocess
import urllib.error
import urllib.request
from email.message import EmailMessage
from typing import Any

from .. import __version__
from .settings import SENDMAIL


def deliver(sink: str, target: Any, event: dict[str, Any], timeout: float) -> str:
    """Deliver `event`; return `delivered`, or what went wrong (`refused: ...`, `timed out after Ns`)."""
    if sink == "command":
        return _command(list(target), event, timeout)
    if sink == "webhook":
        return _webhook(str(target), event, timeout)
    if sink == "mail":
        return _mail(dict(target), event, timeout)
    if sink == "ping":
        return _ping(dict(target), timeout)
    return f"refused: unknown sink {sink!r}"


def _command(argv: list[str], event: dict[str, Any], timeout: float, stdin: bytes | None = None) -> str:
    run = event.get("run") or {}
    env = {**os.environ, "SUPERVISOR_EVENT": str(event.get("event", "")), "SUPERVISOR_WORKER": str(event.get("worker") or ""),
           "SUPERVISOR_OUTCOME": str(run.get("outcome") or ""), "SUPERVISOR_RUN_ID": str(run.get("id") or ""),
           "SUPERVISOR_EXIT_CODE": "" if run.get("exit_code") is None else str(run["exit_code"]),
           "SUPERVISOR_SIGNAL": str(run.get("signal") or "")}
    try:
        done = subprocess.run(argv, input=stdin if stdin is not None else json.dumps(event).encode(), env=env,
                              stdout=subprocess.DEVNULL,
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
    return _post(url, json.dumps(event).encode(), "application/json", timeout)


def _post(url: str, body: bytes, content_type: str, timeout: float) -> str:
    """POST `body`; a 2xx answer is `delivered`, anything else says what went wrong."""
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": content_type, "User-Agent": f"worker-supervisor/{__version__}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - the operator's URL
            response.read(65536)
            return "delivered" if 200 <= response.status < 300 else f"refused: HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return f"refused: HTTP {exc.code}"
    except (TimeoutError, urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError) or "timed out" in str(reason):
            return f"timed out after {timeout:g}s"
        return f"refused: {getattr(reason, 'strerror', None) or reason}"


def _mail(target: dict[str, Any], event: dict[str, Any], timeout: float) -> str:
    """The event as a plain mail: its text as the subject, the run's facts and output as the body; through an SMTP
    server when one is named, else through sendmail (cron's way)."""
    message = EmailMessage()
    message["Subject"] = str(event.get("text", "worker-supervisor"))[:200]
    message["From"] = target.get("from") or f"worker-supervisor@{socket.gethostname()}"
    message["To"] = ", ".join(target["to"])
    message["X-Worker-Supervisor-Event"] = str(event.get("event"))
    message.set_content(_mail_body(event))
    smtp = target.get("smtp")
    if smtp:
        host, _, port = str(smtp).rpartition(":")
        try:
            with smtplib.SMTP(host, int(port), timeout=timeout) as server:
                server.send_message(message)
            return "delivered"
        except smtplib.SMTPException as exc:
            return f"refused: {exc}"
        except TimeoutError:
            return f"timed out after {timeout:g}s"
        except OSError as exc:
            return f"refused: {exc.strerror or exc}"
    if not os.path.exists(SENDMAIL):
        return f"refused: no {SENDMAIL} on this host; set smtp_host in [notify]"
    return _command([SENDMAIL, "-t", "-oi"], {}, timeout, stdin=message.as_bytes())


def _mail_body(event: dict[str, Any]) -> str:
    run = event.get("run") or {}
    lines = [str(event.get("text", "")), ""]
    for key in ("worker", "node", "host"):
        if event.get(key):
            lines.append(f"{key}: {event[key]}")
    for key in ("id", "outcome", "exit_code", "signal", "pid", "started_at", "ended_at", "duration_s"):
        if run.get(key) is not None:
            lines.append(f"run {key}: {run[key]}")
    for title, key in (("message", "message"), ("traceback", "traceback"), ("stderr (tail)", "stderr_tail")):
        if run.get(key):
            lines += ["", f"{title}:", str(run[key])]
    return "\n".join(lines) + "\n"


PING_SUFFIX = {"start": "/start", "success": "", "fail": "/fail"}
PING_BODY_LIMIT = 10_000


def _ping(target: dict[str, Any], timeout: float) -> str:
    url = f"{str(target['url']).rstrip('/')}{PING_SUFFIX[target['kind']]}?rid={target['rid']}"
    body = str(target.get("body") or "").encode()[-PING_BODY_LIMIT:]
    return _post(url, body, "text/plain; charset=utf-8", timeout)

"""Alerts from the supervisor, through a real webhook server and a real command on loopback: one alert per failing
spell, one recovery, a reminder only when the kind of failure changes, no repeat after a restart, a cap per
minute, and a sink that hangs costs the runs nothing."""
from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import pytest
from aiosmtpd.controller import Controller

from helpers import Record, SupervisorProcess, wait_until, worker_package
from supervisor.notify.policy import AlertState, RateLimit, decide
from supervisor.notify.settings import NotifySettings

FLAKY = '''
import os
from supervisor import worker

HERE = os.getcwd()


@worker(interval=0.2)
def flaky(ctx):
    mode = open(os.path.join(HERE, "mode")).read().strip() if os.path.exists(os.path.join(HERE, "mode")) else "raise"
    if mode == "raise":
        raise ValueError("the upstream said no")
    if mode == "segfault":
        import ctypes
        ctypes.string_at(0)
'''


class Hook:
    """A webhook receiver on loopback: every POST's JSON body, in order; `hang` makes it never answer."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.pings: list[tuple[str, str]] = []
        self.hang = threading.Event()
        self.released = threading.Event()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the standard library's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if hook.hang.is_set():
                    hook.released.wait(60)  # holds the request until the test ends
                if self.headers["Content-Type"] == "application/json":
                    hook.events.append(json.loads(body))
                else:
                    hook.pings.append((self.path, body.decode()))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = False  # server_close waits for the handlers: no socket left behind
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in list(self.events) if e["event"] == kind]

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


SCHEMA = json.loads((Path(__file__).parent.parent / "docs" / "notify-payload.schema.json").read_text())


def valid(event: dict[str, Any]) -> None:
    """The payload as docs/notify-payload.schema.json says it is."""
    jsonschema.validate(event, SCHEMA)


@pytest.fixture
def hook() -> Iterator[Hook]:
    receiver = Hook()
    yield receiver
    receiver.close()
    for event in receiver.events:  # every payload a test received
        valid(event)


def settle(seconds: float) -> None:
    until = time.monotonic() + seconds
    wait_until(lambda: time.monotonic() > until, timeout=seconds + 5, step=0.1)


def test_one_alert_per_spell_a_change_alerts_again_one_recovery_and_a_restart_repeats_nothing(
        tmp_path: Path, db: Path, record: Record, hook: Hook) -> None:
    worker_package(tmp_path, [], extra={"flaky": FLAKY})
    sink_log = tmp_path / "command-sink.jsonl"
    command = [sys.executable, "-c", f"import sys, os; open({str(sink_log)!r}, 'a').write(sys.stdin.read().strip() "
               "+ ' ' + os.environ['SUPERVISOR_OUTCOME'] + chr(10))"]
    config = f'[notify]\nwebhook = "{hook.url}"\ncommand = {json.dumps(command)}\nrepeat = 0\n'
    supervisor = SupervisorProcess(tmp_path, f"sqlite:///{db}", config=config)
    try:
        # Failing every 0.2 s for 20 s: one alert.
        wait_until(lambda: len(record.runs("flaky")) >= 100, timeout=90, step=0.2, what="20 s of failures")
        settle(1.0)
        (first,) = hook.of("failure")
        assert first["version"] == 1 and first["worker"] == "flaky" and first["run"]["outcome"] == "error"
        assert "the upstream said no" in first["text"] and "ValueError" in first["run"]["traceback"]
        assert "sqlite" not in json.dumps(first)  # never the database's URL
        # The command sink got the same event on stdin, and the outcome in its environment.
        line = wait_until(lambda: sink_log.exists() and sink_log.read_text().splitlines(), timeout=10,
                          what="the command sink's line")[0]
        assert json.loads(line.rsplit(" ", 1)[0])["event"] == "failure" and line.endswith(" error")
        valid(json.loads(line.rsplit(" ", 1)[0]))
        # The kind of failure changes (an exception, then a segfault): told at once.
        (tmp_path / "mode").write_text("segfault")
        wait_until(lambda: len(hook.of("failure")) == 2, timeout=30, what="the changed failure")
        assert hook.of("failure")[1]["run"]["signal"] == "SIGSEGV" and "changed" in hook.of("failure")[1]["text"]
        # A restart in the middle of the spell tells nothing again: the state is in the record.
        assert supervisor.stop() == 0
        supervisor = SupervisorProcess(tmp_path, f"sqlite:///{db}", config=config)
        before = len(record.runs("flaky"))
        wait_until(lambda: len(record.runs("flaky")) >= before + 5, timeout=60, what="failures after the restart")
        settle(1.0)
        assert len(hook.of("failure")) == 2
        # Fixed: one recovery.
        (tmp_path / "mode").write_text("ok")
        wait_until(lambda: hook.of("recovery"), timeout=30, what="the recovery")
        settle(1.5)
        assert len(hook.of("recovery")) == 1 and len(hook.of("failure")) == 2
        assert supervisor.stop() == 0
    finally:
        supervisor.stop()


def test_after_n_failures_only_and_a_hanging_sink_costs_the_runs_nothing(tmp_path: Path, db: Path, record: Record,
                                                                         hook: Hook) -> None:
    flaky_twice = '''
import os
from supervisor import worker


@worker(interval=0.2)
def twice(ctx):
    path = os.path.join(os.getcwd(), "count")
    count = int(open(path).read()) if os.path.exists(path) else 0
    open(path, "w").write(str(count + 1))
    if count % 3 < 2:
        raise RuntimeError("a blip")
'''
    worker_package(tmp_path, ["healthy"], extra={"twice": flaky_twice, "flaky": FLAKY})
    hook.hang.set()  # the webhook never answers, and the command's mail server refuses: the supervisor must not care
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]  # nothing listens here once the probe is closed
    # A command that answers, beside them: it tells which workers were alerted at all.
    told = tmp_path / "told"
    command = [sys.executable, "-c", f"import os; open({str(told)!r}, 'a').write(os.environ['SUPERVISOR_WORKER'] + chr(10))"]
    config = (f'[notify]\nwebhook = "{hook.url}"\nmailto = "ops@example.com"\nsmtp_host = "127.0.0.1:{closed}"\n'
              f'command = {json.dumps(command)}\nafter = 3\ntimeout = "2s"\n')
    supervisor = SupervisorProcess(tmp_path, f"sqlite:///{db}", ["--metrics", "127.0.0.1:0"], config=config)
    try:
        wait_until(lambda: len(record.runs("twice")) >= 12 and len(record.runs("healthy")) >= 20, timeout=60,
                   what="runs while the sink hangs")
        # Two failures in a row, never three: nothing to tell of `twice`. `flaky` fails on: one alert, attempted.
        from datetime import datetime
        starts = sorted(datetime.fromisoformat(r["started_at"]).timestamp() for r in record.runs("healthy"))
        assert max(b - a for a, b in zip(starts, starts[1:])) < 1.0  # every 0.2 s, while the sink hangs
        wait_until(lambda: "the webhook sink failed to deliver failure of flaky" in supervisor.log(), timeout=30,
                   what="the failing sink logged")
        assert supervisor.log().count("the webhook sink failed") == 1
        wait_until(lambda: "the mail sink failed to deliver failure of flaky: refused" in supervisor.log(),
                   timeout=30, what="the refusing sink logged")
        assert supervisor.log().count("the mail sink failed") == 1
        # Counted in the metrics too.
        port = int(re.search(r"metrics on http://127\.0\.0\.1:(\d+)/", supervisor.log()).group(1))  # type: ignore[union-attr]
        scrape = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        failed = re.search(r'worker_supervisor_alerts_total\{result="failed",sink="mail"\} (\S+)', scrape)
        assert failed and float(failed.group(1)) >= 1, scrape
        # flaky was told (three failures in a row and more); twice, failing twice in a row at most, never.
        wait_until(lambda: told.exists() and "flaky" in told.read_text().split(), timeout=30, what="flaky told")
        assert "twice" not in told.read_text().split(), told.read_text()
        assert supervisor.stop() == 0
    finally:
        supervisor.stop()


def test_notify_test_says_how_each_sink_went(tmp_path: Path, hook: Hook) -> None:
    config = tmp_path / "supervisor.toml"
    config.write_text(f'[notify]\nwebhook = "{hook.url}"\ncommand = ["false"]\n')
    done = subprocess.run([sys.executable, "-m", "supervisor", "notify", "test", "--config", str(config)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stdout.splitlines() == ["webhook: delivered", "command: refused: exit status 1"], done.stdout
    (event,) = hook.events
    assert event["event"] == "test" and "test notification" in event["text"]


def test_the_policy_and_the_cap_on_invented_clocks() -> None:
    settings = NotifySettings(webhook="http://x/", after=2, repeat=3600)
    state = AlertState()
    assert decide(state, settings, True, "error:ValueError", 1, 0).event is None  # one is not yet two
    assert decide(state, settings, True, "error:ValueError", 2, 1).event == "failure"
    assert decide(state, settings, True, "error:ValueError", 3, 2).event is None
    reminder = decide(state, settings, True, "error:ValueError", 9, 3602)
    assert reminder.event == "failure" and reminder.reminder
    assert decide(state, settings, False, None, 0, 3700).event == "recovery"
    assert decide(state, settings, False, None, 0, 3701).event is None
    limit = RateLimit(per_minute=10)
    allowed = [limit.allow(100.0 + i * 0.1, f"w{i}") for i in range(50)]  # 50 workers failing together
    assert sum(allowed) == 10
    assert limit.summary_due(130.0) is None
    held = limit.summary_due(161.0)
    assert held is not None and len(held) == 40


def test_a_run_lost_with_its_supervisor_is_told_at_the_next_start(tmp_path: Path, db: Path, record: Record,
                                                                  hook: Hook) -> None:
    worker_package(tmp_path, ["slow"])
    config = f'[notify]\nwebhook = "{hook.url}"\n'
    supervisor = SupervisorProcess(tmp_path, f"sqlite:///{db}", config=config)
    try:
        (run,) = wait_until(lambda: [r for r in record.runs("slow", finished=False) if r["pid"]], timeout=60,
                            what="a slow run")
        supervisor.signal(__import__("signal").SIGKILL)  # the supervisor dies: nobody sees the run end
        supervisor.wait(10)
        again = SupervisorProcess(tmp_path, f"sqlite:///{db}", config=config)
        try:
            (lost,) = wait_until(lambda: hook.of("lost"), timeout=60, what="the lost event")
            assert lost["worker"] == "slow" and lost["run"]["id"].replace("-", "") == run["id"]
            assert lost["run"]["outcome"] == "lost" and "died during the run" in lost["run"]["message"]
        finally:
            again.stop()
    finally:
        supervisor.stop()


class SmtpServer:
    """aiosmtpd's SMTP server on loopback (in a thread of its own), keeping every message it is given."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        server = self

        class Handler:
            async def handle_DATA(self, smtp: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - its API
                server.messages.append(envelope.content)
                return "250 OK"

        with socket.socket() as probe:  # a free port (the controller's own start check cannot use port 0)
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=port)
        self.controller.start()
        self.address = f"127.0.0.1:{port}"

    def close(self) -> None:
        self.controller.stop()
        self.controller.loop.close()  # its event loop's descriptors, which stop() leaves open


def test_mail_through_smtp_and_a_dead_mans_switch_pinged_per_run(tmp_path: Path, db: Path, record: Record,
                                                                 hook: Hook) -> None:
    nightly = '''
from supervisor import worker


@worker(interval=600)
def nightly(ctx):
    print("exported")
'''
    smtp = SmtpServer()
    worker_package(tmp_path, ["raises"], extra={"nightly": nightly})
    config = (f'[notify]\nmailto = "ops@example.com"\nsmtp_host = "{smtp.address}"\n\n'
              f'[worker.nightly.notify]\nping_url = "{hook.url}/ping/nightly"\n\n'
              f'[worker.raises.notify]\nping_url = "{hook.url}/ping/raises"\n')
    supervisor = SupervisorProcess(tmp_path, f"sqlite:///{db}", config=config)
    try:
        # nightly: a start and a success, with one run id; raises: a failure each time, its start at most once.
        wait_until(lambda: [p for p in hook.pings if p[0].startswith("/hook/ping/nightly?")], timeout=60,
                   what="nightly's success ping")
        wait_until(lambda: len([p for p in hook.pings if p[0].startswith("/hook/ping/raises/fail")]) >= 3,
                   timeout=60, what="three failure pings")
        (start,) = [p for p in hook.pings if p[0].startswith("/hook/ping/nightly/start")]
        (done,) = [p for p in hook.pings if p[0].startswith("/hook/ping/nightly?")]
        assert start[0].split("rid=")[1] == done[0].split("rid=")[1]
        assert len([p for p in hook.pings if p[0].startswith("/hook/ping/raises/start")]) == 1  # a minute's worth
        # One mail for the failing spell, through the SMTP server.
        wait_until(lambda: smtp.messages, timeout=30, what="the mail")
        (mail,) = smtp.messages
        text = mail.decode(errors="replace")
        assert "To: ops@example.com" in text and "Subject: raises failed" in text and "fail_loudly" in text
        assert supervisor.stop() == 0
    finally:
        supervisor.stop()
        smtp.close()


MANY = '''
from supervisor import register, worker


def fail(ctx):
    raise RuntimeError("the database is down")


register(*[worker(name=f"w{i:02d}", interval=2)(fail) for i in range(50)])
'''


def test_fifty_workers_failing_together_give_ten_alerts_and_one_summary(tmp_path: Path, db: Path, record: Record,
                                                                       hook: Hook) -> None:
    worker_package(tmp_path, [], extra={"many": MANY})
    supervisor = SupervisorProcess(tmp_path, f"sqlite:///{db}", config=f'[notify]\nwebhook = "{hook.url}"\n')
    try:
        (summary,) = wait_until(lambda: hook.of("summary"), timeout=120, step=0.5, what="the summary")
        assert summary["count"] == 40 and len(summary["workers"]) == 40, summary
        assert len(hook.of("failure")) == 10
        assert {e["worker"] for e in hook.of("failure")}.isdisjoint(summary["workers"])
        assert supervisor.stop() == 0
    finally:
        supervisor.stop()


def test_a_crash_a_timeout_and_a_limit_each_give_an_event_with_its_outcome(tmp_path: Path, db: Path, record: Record,
                                                                          hook: Hook) -> None:
    worker_package(tmp_path, ["segfault", "hang", "hog"])
    supervisor = SupervisorProcess(tmp_path, f"sqlite:///{db}", config=f'[notify]\nwebhook = "{hook.url}"\n')
    try:
        wanted = {"segfault": "crash", "hang": "timeout", "hog": "limit"}
        wait_until(lambda: {e["worker"] for e in hook.of("failure")} >= set(wanted), timeout=60, what="three events")
        for event in hook.of("failure"):
            assert event["run"]["outcome"] == wanted[event["worker"]], event
        crash = next(e for e in hook.of("failure") if e["worker"] == "segfault")
        assert crash["run"]["signal"] == "SIGSEGV" and "Segmentation fault" in crash["run"]["stderr_tail"]
        assert supervisor.stop() == 0
    finally:
        supervisor.stop()


def test_a_reload_brings_the_notify_table_into_force(tmp_path: Path, db: Path, record: Record, hook: Hook) -> None:
    worker_package(tmp_path, ["raises"])
    supervisor = SupervisorProcess(tmp_path, f"sqlite:///{db}", config="workers = [\"workers\"]\n")
    try:
        wait_until(lambda: len(record.runs("raises")) >= 3, timeout=60, what="failures with no sink")
        (tmp_path / "supervisor.toml").write_text(f'workers = ["workers"]\n\n[notify]\nwebhook = "{hook.url}"\n')
        supervisor.signal(__import__("signal").SIGHUP)
        (alert,) = wait_until(lambda: hook.of("failure"), timeout=30, what="the alert after the reload")
        assert alert["worker"] == "raises"
        assert "notify changed" not in supervisor.log()  # applied, not put off to a restart
        assert supervisor.stop() == 0
    finally:
        supervisor.stop()

"""Prometheus metrics served by the supervisor's loop (run --metrics) and written for node_exporter
(--metrics-textfile): what they say agrees with the record, and they stay true while the database is down."""
from __future__ import annotations

import http.client
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
from prometheus_client.parser import text_string_to_metric_families

from helpers import Record, SupervisorProcess, TcpProxy, title, wait_until, worker_package

SLOW = '''
from supervisor import worker


@worker(interval=3600, timeout=600)
def slow(ctx):
    ctx.sleep(600)
'''


def port_of(supervisor: SupervisorProcess) -> int:
    found = wait_until(lambda: re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", supervisor.log()),
                       timeout=60, what="the metrics line")
    return int(found.group(1))


def get(port: int, path: str = "/metrics", method: str = "GET") -> tuple[int, dict[str, str], str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read().decode()
    finally:
        connection.close()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(text: str, name: str, **labels: str) -> float | None:
    return samples(text).get((name, tuple(sorted(labels.items()))))


def test_the_metrics_agree_with_the_record(tmp_path: Path, db: Path, record: Record, start_supervisor: Any) -> None:
    worker_package(tmp_path, ["healthy", "raises", "segfault", "hang", "exit3", "sigkill_self", "hog"],
                   extra={"slow": SLOW})
    textfile = tmp_path / "prom" / "worker-supervisor.prom"
    textfile.parent.mkdir()
    supervisor = start_supervisor("--metrics", "127.0.0.1:0", "--metrics-textfile", str(textfile))
    port = port_of(supervisor)
    # Runs of every outcome a run can end with while the supervisor lives: succeeded, error, crash, timeout, exit,
    # killed, limit (lost and interrupted need the supervisor's own death or stop).
    zoo = ("healthy", "raises", "segfault", "hang", "exit3", "sigkill_self", "hog")
    wait_until(lambda: all(len(record.runs(w)) >= 1 for w in zoo) and len(record.runs("hang")) >= 2, timeout=60,
               what="runs of every worker")
    # Freeze the spawner: no run ends any more, and once the record has caught up, both must say the same.
    (spawner,) = [p for p in psutil.Process(supervisor.pid).children() if "worker-supervisor: spawner" in title(p)]
    spawner.suspend()
    try:
        def agree() -> str | None:
            text = get(port)[2]
            rows = record.query("select worker, outcome, count(*) as n from run where outcome is not null "
                                "group by worker, outcome")
            expected = {(row["worker"], row["outcome"]): row["n"] for row in rows}
            found = {(dict(labels)["worker"], dict(labels)["outcome"]): v for (name, labels), v in samples(text).items()
                     if name == "worker_supervisor_runs_total"}
            return text if found == expected else None
        text = wait_until(agree, timeout=30, what="the metrics and the record agreeing")
        # Still frozen: a run that ended after the resume would be in the record (within milliseconds now) and
        # not in this text.
        for worker in zoo:
            finished = len(record.runs(worker))
            assert value(text, "worker_supervisor_run_duration_seconds_count", worker=worker) == finished
            row = record.worker(worker)
            assert value(text, "worker_supervisor_consecutive_failures", worker=worker) == row["consecutive_failures"]
    finally:
        spawner.resume()
    outcomes = {dict(labels)["outcome"] for (name, labels) in samples(text) if name == "worker_supervisor_runs_total"}
    assert outcomes == {"succeeded", "error", "crash", "timeout", "exit", "killed", "limit"}, outcomes
    assert value(text, "worker_supervisor_running", worker="slow") == 1
    assert value(text, "worker_supervisor_worker_state", worker="slow", state="running") == 1
    assert value(text, "worker_supervisor_runs_total", worker="segfault", outcome="crash") >= 2
    assert value(text, "worker_supervisor_runs_total", worker="hang", outcome="timeout") >= 2
    assert value(text, "worker_supervisor_last_success_timestamp_seconds", worker="raises") is None
    assert value(text, "worker_supervisor_last_success_timestamp_seconds", worker="healthy") > 0
    assert value(text, "worker_supervisor_schedule_period_seconds", worker="healthy") == 0.2
    assert value(text, "worker_supervisor_database_up") == 1
    assert value(text, "worker_supervisor_next_run_timestamp_seconds", worker="slow") > 0
    # Conventions: counters end in _total, times in _seconds; no label names a run or a process.
    for family in text_string_to_metric_families(text):
        assert family.name.startswith("worker_supervisor_")
        for sample in family.samples:
            assert not {"run_id", "pid", "host"} & set(sample.labels)
            if family.type == "counter":
                assert sample.name.endswith(("_total", "_created"))
    # Only GET and HEAD of /metrics.
    assert get(port, method="POST")[0] == 405
    assert get(port, "/other")[0] == 404
    status, headers, body = get(port, method="HEAD")
    assert status == 200 and body == "" and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    # The textfile for node_exporter says the same things.
    # (written every 15 s, atomically: never a half-written file)
    wait_until(lambda: textfile.exists() and value(textfile.read_text(), "worker_supervisor_running", worker="slow") == 1,
               timeout=40, step=0.2, what="the textfile with the slow run")
    assert supervisor.stop() == 0


def test_the_metrics_stay_true_while_the_database_is_down(tmp_path: Path, pg_url: str) -> None:
    proxy = TcpProxy(5432)
    url = f"postgresql://postgres@127.0.0.1:{proxy.port}/{pg_url.rsplit('/', 1)[1]}"
    worker_package(tmp_path, ["healthy"])
    supervisor = SupervisorProcess(tmp_path, url, ["--metrics", "127.0.0.1:0", "--lease", "30"])
    try:
        port = port_of(supervisor)
        wait_until(lambda: value(get(port)[2], "worker_supervisor_runs_total", worker="healthy", outcome="succeeded"),
                   timeout=60, what="runs counted")
        proxy.set("cut")
        down = wait_until(lambda: (lambda t: t if value(t, "worker_supervisor_database_up") == 0 and
                                   (value(t, "worker_supervisor_pending_records") or 0) > 0 else None)(get(port)[2]),
                          timeout=60, what="the database down in the metrics")
        before = value(down, "worker_supervisor_runs_total", worker="healthy", outcome="succeeded")
        # Runs go on and are counted meanwhile (a node alone rides out the outage while its lease holds).
        wait_until(lambda: value(get(port)[2], "worker_supervisor_runs_total", worker="healthy",
                                 outcome="succeeded") > before, timeout=30, what="runs counted during the outage")
        proxy.set("forward")
        wait_until(lambda: value(get(port)[2], "worker_supervisor_database_up") == 1, timeout=60,
                   what="the database up again")
    finally:
        supervisor.stop()
        proxy.close()


def test_a_listen_address_without_a_host_is_refused_in_one_line(tmp_path: Path, db: Path) -> None:
    worker_package(tmp_path, ["healthy"])
    done = subprocess.run([sys.executable, "-m", "supervisor", "run", "--db", f"sqlite:///{db}", "--metrics", "9464"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "HOST:PORT" in line and "9464" in line, line

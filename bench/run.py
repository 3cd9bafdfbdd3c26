"""`make bench`: the price of isolation, against the floor and the peer, measured in one run (issue 6).

Everything is measured as a user runs it: a real `python -m supervisor run` process tree on a real SQLite file
(and on PostgreSQL when a server answers on 127.0.0.1:5432), with the worker modules in bench/benchworkers.
Per-process CPU, RSS and descriptors are read with psutil from outside; runs report their own timings
(bench/benchworkers/_common.py). The floors (bench/floor.py) and the peers, APScheduler 3 with its
ProcessPoolExecutor (bench/peer_aps.py) and, when Redis answers on 127.0.0.1:6379, RQ and Celery
(bench/peer_rq.py, bench/peer_celery.py; issue 16), run on the same machine in the same run.

    bench/.venv/bin/python bench/run.py            # the full run (under 10 minutes on 2 cores)
    bench/.venv/bin/python bench/run.py --quick    # every measurement, shorter (about 3 minutes)
    bench/.venv/bin/python bench/run.py --only latency,crash --quick   # sections: see SECTIONS

Prints the table and writes it, with the machine it ran on, to docs/benchmarks.md (a quick run writes
bench/out/benchmarks-quick.md instead); the raw numbers go to bench/out/.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import json
import math
import os
import platform
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import psutil

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
OUT = BENCH / "out"
PY = sys.executable
CORES = os.cpu_count() or 1
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
POLL_STEP = 0.0005  # seconds between two looks for a failure row (the resolution of crash to record)
SECTIONS = ("latency", "crash", "throughput", "waiting", "alerts", "peers")  # each measures its own floors first
REDIS_URL = "redis://127.0.0.1:6379/13"  # the RQ and Celery peers' database number, emptied before each and after
PEER_STEP = 0.005  # seconds between two looks for the throughput jobs' records (the end of that window)
PEER_SPACING = 0.1  # seconds between two submissions of the latency jobs, and between two crashes
NEVER_AFTER = 15.0  # seconds after a crash with no failure record: none comes ("never"). Celery may take 5 s.


@dataclass(frozen=True)
class PeerVariant:
    """One of issue 16's peers: `processes` times bench/<script>.py --variant <variant>; the script's Client submits."""

    key: str
    script: str
    variant: str
    processes: int


PEER_VARIANTS = (
    PeerVariant("rq_fork", "peer_rq", "fork", CORES),  # one RQ worker a process, cores of them
    PeerVariant("rq_simple", "peer_rq", "simple", CORES),
    PeerVariant("celery_fresh", "peer_celery", "fresh", 1),  # one Celery worker with a pool of cores processes
    PeerVariant("celery_reused", "peer_celery", "reused", 1),
)


@dataclass(frozen=True)
class Plan:
    """How long each measurement runs."""

    samples: int  # start-latency samples per configuration (the probe runs every `probe_interval`)
    probe_interval: float
    crash_seconds: float
    rate_seconds: float
    wait_seconds: float  # the waiting windows (60 s in the full run, as issue 6 says)
    peer_wait_seconds: float
    floor_samples: int
    peer_samples: int  # issue 16's peers: latency jobs submitted one at a time, PEER_SPACING apart
    peer_jobs: int  # throughput: jobs queued at once
    peer_crashes: int
    peer_seconds: float  # the most a peer's latency jobs, or its crashes, may take (Celery's fresh pool stalls)


FULL = Plan(samples=150, probe_interval=0.05, crash_seconds=10, rate_seconds=10, wait_seconds=60,
            peer_wait_seconds=30, floor_samples=150, peer_samples=50, peer_jobs=200, peer_crashes=10,
            peer_seconds=30)
QUICK = Plan(samples=40, probe_interval=0.05, crash_seconds=4, rate_seconds=3, wait_seconds=10,
             peer_wait_seconds=10, floor_samples=40, peer_samples=20, peer_jobs=100, peer_crashes=5,
             peer_seconds=10)


# -- numbers -------------------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    """The q-quantile by nearest rank (p99 of 150 samples is the second largest)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def dist(values: list[float], scale: float = 1e3) -> dict[str, float]:
    """p50, p99 and the count, in milliseconds by default."""
    return {"p50": pct(values, 0.5) * scale, "p99": pct(values, 0.99) * scale, "n": len(values)}


# -- databases -----------------------------------------------------------------------------------------------


class Reader:
    """Another connection to the database, the one that sees what the supervisor (or the peer) committed."""

    def __init__(self, url: str) -> None:
        self.url = url
        if url.startswith("sqlite:///"):
            self.conn: Any = sqlite3.connect(url[len("sqlite:///"):], isolation_level=None, timeout=5)
            self.param = "?"
        else:
            import psycopg

            self.conn = psycopg.connect(url, autocommit=True)
            self.param = "%s"

    def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        try:
            return list(self.conn.execute(sql.replace("?", self.param), args).fetchall())
        except Exception as exc:  # the table is not there yet (the supervisor creates it when it starts)
            if "no such table" in str(exc) or type(exc).__name__ == "UndefinedTable":
                return []
            raise

    def scalar(self, sql: str, *args: Any) -> Any:
        rows = self.rows(sql, *args)
        return rows[0][0] if rows else None

    def columns(self, table: str) -> list[str]:
        if self.url.startswith("sqlite"):
            return [r[1] for r in self.rows(f"PRAGMA table_info({table})")]
        return [r[0] for r in self.rows("SELECT column_name FROM information_schema.columns WHERE table_name = ?", table)]

    def close(self) -> None:
        self.conn.close()


def redis_connect() -> Any | None:
    """A connection to the peers' Redis database, or None when no Redis answers on 127.0.0.1:6379."""
    try:
        import redis

        conn = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
        conn.ping()
        return conn
    except Exception:
        return None


def postgres_reachable() -> bool:
    try:
        import psycopg

        psycopg.connect(PG_ADMIN, connect_timeout=2).close()
        return True
    except Exception:
        return False


@contextlib.contextmanager
def postgres_database(name: str) -> Iterator[str]:
    """A database of our own on the local server, dropped afterwards."""
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- processes -----------------------------------------------------------------------------------------------


def bench_env(**values: object) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BENCH_", "SUPERVISOR_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCH), env.get("PYTHONPATH")]))
    env.update({f"BENCH_{k.upper()}": str(v) for k, v in values.items()})
    return env


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, step: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what} (last: {value!r})")
        time.sleep(step)


def cpu_self(p: psutil.Process) -> tuple[float, float]:
    """(own CPU seconds, reaped children's CPU seconds). Own time is the sum over the process's threads of
    /proc/PID/task/TID/schedstat, which the scheduler keeps in nanoseconds; psutil's user + system are in clock
    ticks (10 ms), too coarse for a process that wakes twice a second. (A thread that ends within a window takes
    its time with it; APScheduler's threads live as long as the scheduler.) Reaped children's time is only kept
    in ticks."""
    t = p.cpu_times()
    own = t.user + t.system
    with contextlib.suppress(OSError, ValueError, IndexError):
        tasks = Path(f"/proc/{p.pid}/task")
        own = sum(int((task / "schedstat").read_text().split()[0]) for task in tasks.iterdir()) / 1e9
    return own, t.children_user + t.children_system


def tree(root: psutil.Process) -> list[psutil.Process]:
    try:
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def alive(p: psutil.Process) -> bool:
    """Running, and not a zombie waiting for its parent (the benchmark) to reap it."""
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def cpu_snapshot(root: psutil.Process) -> dict[tuple[int, float], tuple[float, float]]:
    """CPU seconds (own, reaped children's) of every process in the tree, keyed by (pid, start time)."""
    snap = {}
    for p in tree(root):
        with contextlib.suppress(psutil.NoSuchProcess):
            snap[(p.pid, p.create_time())] = cpu_self(p)
    return snap


def tree_cpu_delta(before: dict, after: dict) -> float:
    """CPU seconds the whole tree used between two snapshots, runs that came and went included.

    A process that ended in between was reaped by a process of the tree, whose children's time now holds its
    whole life; what it had used before the window is subtracted, since it was in the first snapshot.
    """
    return sum(a + c for a, c in after.values()) - sum(a + c for a, c in before.values())


class Supervised:
    """A real `python -m supervisor run` process tree on a scratch directory."""

    def __init__(self, name: str, db: str, module: str, env: dict[str, str], workdir: Path,
                 extra: list[str] | None = None) -> None:
        self.name = name
        self.db = db
        self.workdir = workdir
        # The journal goes beside the log: for PostgreSQL it would otherwise land in the working directory.
        self.argv = [PY, "-m", "supervisor", "run", "--db", db, "--workers", module,
                     "--journal", str(workdir / f"{name}.pending"), *(extra or [])]
        self.env = env
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Supervised:
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.argv, cwd=self.workdir, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        log.close()
        self.process = psutil.Process(self.proc.pid)
        return self

    def helper(self, module: str) -> psutil.Process:
        def find() -> psutil.Process | None:
            self.check_alive()
            for child in self.process.children():
                with contextlib.suppress(psutil.Error):
                    if module in " ".join(child.cmdline()):
                        return child
            return None

        return wait_until(find, 60, f"{self.name}: {module}")

    @property
    def spawner(self) -> psutil.Process:
        return self.helper("worker-supervisor: spawner")

    @property
    def recorder(self) -> psutil.Process:
        return self.helper("worker-supervisor: recorder")

    def check_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{self.name}: the supervisor exited with {self.proc.returncode}:\n{tail}")

    def wait_workers(self, count: int, reader: Reader) -> None:
        """Wait until the spawner has reported every worker and the recorder has written them."""
        wait_until(lambda: (self.check_alive(), (reader.scalar("SELECT count(*) FROM worker") or 0) >= count)[1],
                   120, f"{self.name}: {count} worker rows")

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        descendants = tree(self.process)[1:]
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for p in descendants:  # never expected: the supervisor takes its helpers and runs down with it
            with contextlib.suppress(psutil.Error):
                if p.is_running():
                    p.kill()


class Peer:
    """A peer's process: APScheduler (bench/peer_aps.py), an RQ worker (peer_rq.py), a Celery worker (peer_celery.py).

    Started with `--ready` and `--result` files and `options` as flags; entered once the ready file is written.
    On exit: SIGTERM, then SIGKILL after a deadline, to the process and to whatever it left behind."""

    def __init__(self, name: str, workdir: Path, env: dict[str, str], script: str = "peer_aps.py",
                 **options: object) -> None:
        self.name = name
        self.workdir = workdir
        self.ready_path = workdir / f"{name}.ready"
        self.result_path = workdir / f"{name}.result"
        argv = [PY, str(BENCH / script), "--ready", str(self.ready_path), "--result", str(self.result_path)]
        for key, value in options.items():
            argv += [f"--{key.replace('_', '-')}", str(value)]
        self.argv = argv
        self.env = env
        self.log_path = workdir / f"{name}.log"

    def __enter__(self) -> Peer:
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.argv, cwd=self.workdir, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        log.close()
        self.process = psutil.Process(self.proc.pid)
        self.ready = wait_until(self._ready, 120, f"{self.name} ready")
        return self

    def _ready(self) -> dict[str, Any] | None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited: {self.log_path.read_text(errors='replace')[-3000:]}")
        if self.ready_path.exists():
            return json.loads(self.ready_path.read_text())
        return None

    def result(self, timeout: float) -> dict[str, Any]:
        return wait_until(lambda: self.result_path.exists() and json.loads(self.result_path.read_text()),
                          timeout, f"{self.name} result")

    def __exit__(self, *exc: object) -> None:
        descendants = tree(self.process)[1:]
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for p in descendants:  # pool processes, the resource tracker, work horses
            with contextlib.suppress(psutil.Error):
                if p.is_running():
                    p.terminate()
        _, left = psutil.wait_procs(descendants, timeout=5)
        for p in left:
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(left, timeout=5)


def stop_leftovers(out: Path) -> int:
    """Kill any process still running with BENCH_OUT = `out` (a peer's, after its stop); return how many there were."""
    left = []
    for p in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if p.pid != os.getpid() and p.environ().get("BENCH_OUT") == str(out):
                left.append(p)
                p.kill()
    psutil.wait_procs(left, timeout=5)
    return len(left)


def read_lines(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


# -- the measurements ----------------------------------------------------------------------------------------


@dataclass
class Bench:
    plan: Plan
    workdir: Path
    postgres: str | None
    max_children: bool
    """Whether this supervisor has --max-children (the global cap on children at once)."""
    results: dict[str, Any] = field(default_factory=dict)
    loads: list[float] = field(default_factory=list)
    """The 1-minute load average at each step: the machine is shared, and others' load shows here."""
    log: list[str] = field(default_factory=list)

    def say(self, text: str) -> None:
        self.loads.append(os.getloadavg()[0])
        line = f"[{time.strftime('%H:%M:%S')}] {text}"
        print(line, flush=True)
        self.log.append(line)

    def scratch(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def sqlite(self, name: str) -> str:
        return f"sqlite:///{self.scratch(name) / 'bench.db'}"

    # floors ---------------------------------------------------------------------------------------------

    def floor(self, module: str, workers: int, what: list[str], db: str | None = None, **options: object) -> dict[str, Any]:
        argv = [PY, str(BENCH / "floor.py"), "--module", module]
        for w in what:
            argv += ["--what", w]
        if db:
            argv += ["--db", db]
        for key, value in options.items():
            argv += [f"--{key.replace('_', '-')}", str(value)]
        out = subprocess.run(argv, env=bench_env(workers=workers, scenario="idle"), cwd=self.workdir,
                             capture_output=True, text=True, check=True)
        return json.loads(out.stdout)

    def fork_floor(self, module: str, workers: int) -> None:
        """Fork + pipe + reap from a parent with the same modules imported (just before the supervisor's turn,
        so that both see the same machine: others' load on a shared machine comes and goes)."""
        self.say(f"floor: fork + pipe + reap from a parent with {workers} {module} workers imported")
        r = self.floor(f"benchworkers.{module}", workers, ["fork"], samples=self.plan.floor_samples, gap=0.02)
        self.results[f"floor.fork.{module}.{workers}"] = {
            "start": dist(r["fork_start"]), "cycle": dist(r["fork_cycle"]), "rss": r["rss"]}

    def row_floor(self, kind: str, url: str, what: list[str]) -> None:
        """Row insert and crash + reap + row, or the fork+row rate, on one database."""
        self.say(f"floor: {' and '.join(what)} on {kind}")
        p = self.plan
        r = self.floor("benchworkers.lean", 10, what, db=url, samples=p.floor_samples, gap=0.01,
                       seconds=max(2.0, p.rate_seconds / 2), in_flight=CORES)
        found = self.results.setdefault(f"floor.row.{kind}", {})
        for name in ("insert", "crash"):
            if name in r:
                found[name] = dist(r[name])
        for name in ("rate_fork", "rate_fork_row"):
            if name in r:
                found[name] = r[name]

    # start latency ---------------------------------------------------------------------------------------

    def run_latency(self) -> None:
        p = self.plan
        for module in ("lean", "heavy"):
            for workers in (10, 1000):
                key = f"latency.{module}.{workers}"
                self.fork_floor(module, workers)
                self.say(f"start latency: supervisor, {workers} workers, {module} module")
                work = self.scratch(f"{key}.supervisor")
                out = work / "runs.txt"
                env = bench_env(out=out, scenario="latency", workers=workers, active=1, interval=p.probe_interval)
                db = self.sqlite(f"{key}.supervisor")
                with Supervised("supervisor", db, f"benchworkers.{module}", env, work) as s:
                    reader = Reader(db)
                    s.wait_workers(workers, reader)
                    warm = 10  # the first runs come while start-up's records are written
                    wait_until(lambda: len(read_lines(out)) >= warm + p.samples, 60 + p.samples * p.probe_interval * 4,
                               "latency samples", step=0.1)
                    self.results[f"size.{module}.{workers}"] = self.sizes(s)
                    reader.close()
                lines = read_lines(out)[warm:warm + p.samples]
                samples = [float(x[1]) for x in lines]
                self.results[key] = {"supervisor": dist(samples), "parts": self.latency_parts(db, lines)}
                if workers == 10:
                    self.results[key]["supervisor_exec"] = self.exec_latency(key, module, workers)
                for variant in ("default", "fresh"):
                    self.say(f"start latency: APScheduler ({variant}), {workers} jobs, {module} module")
                    if variant == "default":
                        n, spacing = p.samples, p.probe_interval
                    elif module == "lean":
                        n, spacing = max(10, p.samples // 5), 0.3
                    else:
                        n, spacing = max(5, p.samples // 20), 2.0  # each run imports numpy and builds 200 MB anew
                    work = self.scratch(f"{key}.aps-{variant}")
                    out = work / "runs.txt"
                    env = bench_env(out=out, scenario="idle", workers=workers)
                    with Peer(f"aps-{variant}", work, env, module=f"benchworkers.{module}", variant=variant,
                              scenario="latency", idle=workers - 1, samples=n, spacing=spacing,
                              warmup=1.0 if module == "lean" else 3.0) as peer:
                        last = float(peer.ready["last_due"])
                        wait_until(lambda: len([x for x in read_lines(out) if x[0] == "aps"]) >= n,
                                   max(0, last - time.time()) + 30, "APScheduler latency samples", step=0.1)
                    samples = [float(x[1]) for x in read_lines(out) if x[0] == "aps"]
                    self.results[key][f"aps_{variant}"] = dist(samples)

    def run_alerts(self) -> None:
        """Start latency and the supervisor's memory while every run sends alerts to sinks that fail: a webhook that
        accepts and never answers, and an SMTP server that refuses (issue 15). Beside it, the same without sinks."""
        p = self.plan
        for sinks in (False, True):
            key = f"alerts.{'failing' if sinks else 'none'}"
            self.say(f"start latency: supervisor, 10 workers, lean module, {'sinks that hang and refuse' if sinks else 'no sinks'}")
            work = self.scratch(key)
            out = work / "runs.txt"
            extra: list[str] = []
            hang = None
            if sinks:
                hang = socket.socket()
                hang.bind(("127.0.0.1", 0))
                hang.listen(1024)  # accepted by the kernel, never answered
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", 0))
                    refused = probe.getsockname()[1]
                config = work / "supervisor.toml"
                config.write_text(
                    f'[notify]\nwebhook = "http://127.0.0.1:{hang.getsockname()[1]}/hook"\nmailto = "ops@example.com"\n'
                    f'smtp_host = "127.0.0.1:{refused}"\non = ["start", "success", "failure"]\nmax_per_minute = 100000\n'
                    'timeout = "10s"\n')
                extra = ["--config", str(config)]
            env = bench_env(out=out, scenario="latency", workers=10, active=1, interval=p.probe_interval)
            db = self.sqlite(key)
            with Supervised("supervisor", db, "benchworkers.lean", env, work, extra) as s:
                reader = Reader(db)
                s.wait_workers(10, reader)
                rss_before = s.process.memory_info().rss
                warm = 10
                wait_until(lambda: len(read_lines(out)) >= warm + p.samples, 60 + p.samples * p.probe_interval * 4,
                           "latency samples", step=0.1)
                rss_after = s.process.memory_info().rss
                reader.close()
            if hang is not None:
                hang.close()
            lines = read_lines(out)[warm:warm + p.samples]
            self.results[key] = {"latency": dist([float(x[1]) for x in lines]),
                                 "rss_growth_mb": (rss_after - rss_before) / 2**20}

    def exec_latency(self, key: str, module: str, workers: int) -> dict[str, float]:
        """Start latency of runs in a fresh interpreter (isolation = "exec"): the interpreter's start and the
        module's import are in every run's latency, so they are spaced as APScheduler's fresh-process runs."""
        p = self.plan
        self.say(f"start latency: supervisor, isolation = exec, {workers} workers, {module} module")
        n, spacing = (max(10, p.samples // 5), 0.3) if module == "lean" else (max(5, p.samples // 20), 2.0)
        work = self.scratch(f"{key}.supervisor-exec")
        out = work / "runs.txt"
        env = bench_env(out=out, scenario="latency", workers=workers, active=1, interval=spacing, isolation="exec")
        db = self.sqlite(f"{key}.supervisor-exec")
        warm = 2
        with Supervised("supervisor", db, f"benchworkers.{module}", env, work) as s:
            reader = Reader(db)
            s.wait_workers(workers, reader)
            wait_until(lambda: len(read_lines(out)) >= warm + n, 60 + n * spacing * 4, "exec latency samples", step=0.1)
            reader.close()
        return dist([float(x[1]) for x in read_lines(out)[warm:warm + n]])

    def latency_parts(self, db: str, lines: list[list[str]]) -> dict[str, Any]:
        """Split each start latency at the moment the supervisor made the run (its row's `started_at`, taken in
        `start_run` just before the request to the spawner): due -> request, request -> first line."""
        reader = Reader(db)
        started = {}
        for run_id, at in reader.rows("SELECT id, started_at FROM run"):
            if isinstance(at, str):
                at = datetime.datetime.fromisoformat(at)
            started[run_id] = at.replace(tzinfo=datetime.timezone.utc).timestamp()
        reader.close()
        loop, spawn = [], []
        for run_id, late, first_line in ((x[0], float(x[1]), float(x[2])) for x in lines if len(x) > 2):
            if run_id in started:
                due = first_line - late
                loop.append(started[run_id] - due)
                spawn.append(first_line - started[run_id])
        return {"due_to_request": dist(loop), "request_to_first_line": dist(spawn)}

    def sizes(self, s: Supervised) -> dict[str, Any]:
        found = {}
        for role, proc in (("supervisor", s.process), ("spawner", s.spawner), ("recorder", s.recorder)):
            found[role] = {"rss": proc.memory_info().rss, "fds": proc.num_fds()}
        return found

    # crash to record -------------------------------------------------------------------------------------

    def poll_failures(self, reader: Reader, seconds: float, run_column: str) -> dict[str, float]:
        """Look for new failure rows every POLL_STEP for `seconds`; return when each run's row was first seen."""
        seen: dict[str, float] = {}
        last_id = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            rows = reader.rows(f"SELECT id, {run_column} FROM failure WHERE id > ? ORDER BY id", last_id)
            now = time.time()
            for row_id, run in rows:
                last_id = max(last_id, row_id)
                if run is not None:
                    seen.setdefault(str(run), now)
            time.sleep(POLL_STEP)
        return seen

    def run_crash(self) -> None:
        p = self.plan
        dbs = [("sqlite", None)] + ([("postgres", self.postgres)] if self.postgres else [])
        for kind, url in dbs:
            key = f"crash.{kind}"
            self.row_floor(kind, url or self.sqlite("floor"), ["insert", "crash"])
            self.results[key] = self.supervisor_crash(kind, url)
            if kind != "sqlite":
                continue
            for variant in ("default", "fresh"):
                self.say(f"crash to record: APScheduler ({variant}), a failure row from its 'Error running job' log line")
                work = self.scratch(f"{key}.aps-{variant}")
                out = work / "crashes.txt"
                db = self.sqlite(f"{key}.aps-{variant}")
                n = max(8, int(p.crash_seconds / 0.4))
                with Peer(f"aps-{variant}", work, bench_env(out=out), module="benchworkers.lean", variant=variant,
                          scenario="crash", idle=9, samples=n, spacing=0.4, db=db, warmup=1.0) as peer:
                    reader = Reader(db)
                    wait_until(lambda: reader.columns("failure"), 30, "the peer's failure table")
                    seen = self.poll_failures(reader, float(peer.ready["last_due"]) - time.time() + 3, "run")
                    reader.close()
                crashed = {x[0]: float(x[1]) for x in read_lines(out)}
                samples = [seen[run] - t for run, t in crashed.items() if run in seen]
                self.results[key][f"aps_{variant}"] = dist(samples)

    def supervisor_crash(self, kind: str, url: str | None) -> dict[str, Any]:
        """Crash to record for the supervisor: a worker that segfaults every 100 ms, its failure rows polled."""
        key = f"crash.{kind}"
        self.say(f"crash to record: supervisor on {kind}")
        work = self.scratch(f"{key}.supervisor")
        out = work / "crashes.txt"
        db = url or self.sqlite(f"{key}.supervisor")
        env = bench_env(out=out, scenario="crash", workers=10, active=1, interval=0.1)
        with Supervised("supervisor", db, "benchworkers.lean", env, work) as s:
            reader = Reader(db)
            s.wait_workers(10, reader)
            run_column = "run_id" if "run_id" in reader.columns("failure") else "run"
            seen = self.poll_failures(reader, self.plan.crash_seconds, run_column)
            finished = {}  # the run's finished_at: taken when the supervisor classified it (finish_run)
            for run_id, at in reader.rows("SELECT id, finished_at FROM run WHERE finished_at IS NOT NULL"):
                if isinstance(at, str):
                    at = datetime.datetime.fromisoformat(at)
                finished[run_id] = at.replace(tzinfo=datetime.timezone.utc).timestamp()
            # What it keeps of a crash: the last failure row, as the operator reads it.
            columns = [c for c in ("kind", "message", "exit_code", "signal", "traceback", "stderr_tail")
                       if c in reader.columns("failure")]
            last = reader.rows(f"SELECT {', '.join(columns)} FROM failure ORDER BY id DESC LIMIT 1")
            reader.close()
        crashed = {x[0]: float(x[1]) for x in read_lines(out)}
        measured = [run for run in crashed if run in seen][3:]  # the first ones come during start-up
        samples = [seen[run] - crashed[run] for run in measured]
        parts = {"crash_to_classified": dist([finished[r] - crashed[r] for r in measured if r in finished]),
                 "classified_to_visible": dist([seen[r] - finished[r] for r in measured if r in finished])}
        kept = "\n".join(f"{c}: {v}" for c, v in zip(columns, last[0]) if v not in (None, "")) if last else "none"
        return {"supervisor": dist(samples), "parts": parts, "unseen": len([r for r in crashed if r not in seen]),
                "kept": kept}

    # throughput ------------------------------------------------------------------------------------------

    def run_throughput(self) -> None:
        p = self.plan
        dbs = [("sqlite", None)] + ([("postgres", self.postgres)] if self.postgres else [])
        for kind, url in dbs:
            key = f"throughput.{kind}"
            self.row_floor(kind, url or self.sqlite("floor"), ["rate"])
            self.results[key] = self.supervisor_throughput(kind, url)
            if kind != "sqlite":
                continue
            workers, interval = self.results[key]["workers"], self.results[key]["interval"]
            for variant in ("default", "fresh"):
                self.say(f"throughput: APScheduler ({variant}), {workers} jobs every {interval:g} s, {CORES} processes")
                work = self.scratch(f"{key}.aps-{variant}")
                with Peer(f"aps-{variant}", work, bench_env(), module="benchworkers.lean", variant=variant,
                          scenario="busy", jobs=workers, interval=interval, seconds=p.rate_seconds / 2,
                          warmup=2.0) as peer:
                    result = peer.result(p.rate_seconds + 30)
                self.results[key][f"aps_{variant}"] = {"rate": result["rate"], "runs": result["runs"]}

    def supervisor_throughput(self, kind: str, url: str | None) -> dict[str, Any]:
        """Recorded runs per second with as many in flight as cores, and the CPU each run costs per process."""
        if self.max_children:
            # More runs owed than the machine can start (2,500 a second), at most `cores` children at once:
            # whenever a run ends, an owed one starts.
            workers, interval, extra = 50, 0.02, ["--max-children", str(CORES)]
        else:
            # No cap: as many workers as cores, each due every millisecond, so each starts again as soon as
            # its last run ended (and the supervisor skips, counts and logs the slots that came meanwhile).
            workers, interval, extra = CORES, 0.001, []
        shape = f"{workers} trivial workers every {interval:g} s" + (f", --max-children {CORES}" if extra else "")
        self.say(f"throughput: supervisor on {kind}, {shape}")
        key = f"throughput.{kind}"
        work = self.scratch(f"{key}.supervisor")
        db = url or self.sqlite(f"{key}.supervisor")
        env = bench_env(scenario="busy", workers=workers, active=workers, interval=interval)

        def cpu(s: Supervised) -> dict[str, float]:
            spawner = cpu_self(s.spawner)
            return {"supervisor": cpu_self(s.process)[0], "spawner": sum(spawner), "recorder": cpu_self(s.recorder)[0],
                    "runs": spawner[1]}  # the spawner's reaped children: the runs (counted in "spawner" too)

        with Supervised("supervisor", db, "benchworkers.lean", env, work, extra) as s:
            reader = Reader(db)
            s.wait_workers(workers, reader)
            finished = "SELECT count(*) FROM run WHERE finished_at IS NOT NULL"
            time.sleep(2.0)
            n0, t0 = reader.scalar(finished), time.perf_counter()
            before, tree0 = cpu(s), cpu_snapshot(s.process)
            time.sleep(self.plan.rate_seconds)
            n1, t1 = reader.scalar(finished), time.perf_counter()
            after, tree1 = cpu(s), cpu_snapshot(s.process)
            reader.close()
        runs = max(1, n1 - n0)
        per_run = {k: (after[k] - before[k]) / runs * 1e3 for k in after}
        return {"supervisor": {"rate": (n1 - n0) / (t1 - t0), "runs": n1 - n0}, "runs_cpu_ms": per_run.pop("runs"),
                "cpu_per_run_ms": per_run, "tree_cpu_per_run_ms": tree_cpu_delta(tree0, tree1) / runs * 1e3,
                "shape": shape, "offered": workers / interval, "workers": workers, "interval": interval}

    # waiting ---------------------------------------------------------------------------------------------

    def run_waiting(self) -> None:
        p = self.plan
        # 1,000 workers none of which is due: the supervisor and both peers wait side by side in one window
        # (all of them idle, so they do not compete), then their sizes are read.
        self.say(f"waiting: 1000 workers not due, {p.wait_seconds:g}s (supervisor and APScheduler side by side)")
        work = self.scratch("waiting.idle")
        db = self.sqlite("waiting.idle")
        with contextlib.ExitStack() as stack:
            s = stack.enter_context(Supervised("supervisor", db, "benchworkers.lean",
                                               bench_env(scenario="idle", workers=1000, active=0), work))
            peers = {v: stack.enter_context(Peer(f"aps-{v}", work, bench_env(), module="benchworkers.lean", variant=v,
                                                 scenario="idle", idle=1000)) for v in ("default", "fresh")}
            reader = Reader(db)
            s.wait_workers(1000, reader)
            reader.close()
            time.sleep(2.0)  # start-up's records written, the table of 1,000 rows done
            roots = {"supervisor": s.process, **{f"aps_{v}": peer.process for v, peer in peers.items()}}
            before = {k: cpu_snapshot(r) for k, r in roots.items()}
            alone0 = {"supervisor": cpu_self(s.process)[0], "spawner": cpu_self(s.spawner)[0],
                      "recorder": cpu_self(s.recorder)[0],
                      **{f"aps_{v}": cpu_self(peer.process)[0] for v, peer in peers.items()}}
            t0 = time.perf_counter()
            time.sleep(p.wait_seconds)
            elapsed = time.perf_counter() - t0
            after = {k: cpu_snapshot(r) for k, r in roots.items()}
            alone1 = {"supervisor": cpu_self(s.process)[0], "spawner": cpu_self(s.spawner)[0],
                      "recorder": cpu_self(s.recorder)[0],
                      **{f"aps_{v}": cpu_self(peer.process)[0] for v, peer in peers.items()}}
            self.results["waiting.idle"] = {
                "seconds": elapsed,
                "alone": {k: (alone1[k] - alone0[k]) / elapsed * 100 for k in alone1},
                "all": {k: tree_cpu_delta(before[k], after[k]) / elapsed * 100 for k in roots},
            }
            self.results["size.lean.1000"] = self.sizes(s)
            self.results["size.aps.1000"] = {
                f"aps_{v}": {"rss": sum(x.memory_info().rss for x in tree(peer.process)),
                             "main_rss": peer.process.memory_info().rss, "fds": peer.process.num_fds()}
                for v, peer in peers.items()}
        # 200 workers every 10 s: the windows start 5 s after a burst, so each holds whole bursts only.
        self.say(f"waiting: 200 workers every 10 s, {p.wait_seconds:g}s, supervisor")
        work = self.scratch("waiting.every10")
        db = self.sqlite("waiting.every10")
        with Supervised("supervisor", db, "benchworkers.lean",
                        bench_env(scenario="idle", workers=200, active=200, interval=10), work) as s:
            reader = Reader(db)
            wait_until(lambda: (s.check_alive(), reader.scalar("SELECT count(*) FROM run"))[1], 60, "the first burst")
            first = time.time()
            reader.close()
            spawner, recorder = s.spawner, s.recorder
            time.sleep(max(0.0, first + 5 - time.time()))
            window = self._window(s.process, {"spawner": spawner, "recorder": recorder}, p.wait_seconds)
        self.results["waiting.every10"] = {"supervisor": window}
        for variant in ("default", "fresh"):
            self.say(f"waiting: 200 jobs every 10 s, {p.peer_wait_seconds:g}s, APScheduler ({variant})")
            work = self.scratch(f"waiting.every10.aps-{variant}")
            with Peer(f"aps-{variant}", work, bench_env(), module="benchworkers.lean", variant=variant,
                      scenario="wait200", idle=0, warmup=1.0) as peer:
                time.sleep(max(0.0, float(peer.ready["first_due"]) + 5 - time.time()))
                window = self._window(peer.process, {}, p.peer_wait_seconds)
            self.results["waiting.every10"][f"aps_{variant}"] = window

    def _window(self, root: psutil.Process, helpers: dict[str, psutil.Process], seconds: float) -> dict[str, Any]:
        before, alone0 = cpu_snapshot(root), {k: cpu_self(p)[0] for k, p in {"main": root, **helpers}.items()}
        t0 = time.perf_counter()
        time.sleep(seconds)
        elapsed = time.perf_counter() - t0
        after, alone1 = cpu_snapshot(root), {k: cpu_self(p)[0] for k, p in {"main": root, **helpers}.items()}
        return {"seconds": elapsed, "alone": {k: (alone1[k] - alone0[k]) / elapsed * 100 for k in alone1},
                "all": tree_cpu_delta(before, after) / elapsed * 100}


    # RQ and Celery (issue 16) ----------------------------------------------------------------------------

    def run_peers(self) -> None:
        """RQ and Celery beside the supervisor, each alone in turn: the same trivial job, as many in flight as cores."""
        conn = redis_connect()
        if conn is None:
            reason = "no Redis answers on 127.0.0.1:6379"
            self.say(f"peers: skipped: {reason}")
            self.results["peers"] = {"skipped": reason}
            return
        found: dict[str, Any] = {}
        self.results["peers"] = found
        found["supervisor"] = self.supervisor_record_latency()
        # Throughput, CPU per run and crash to record of the supervisor come from their own sections; alone, the
        # section measures them itself.
        if "throughput.sqlite" not in self.results:
            self.row_floor("sqlite", self.sqlite("floor"), ["rate"])
            self.results["throughput.sqlite"] = self.supervisor_throughput("sqlite", None)
        if "crash.sqlite" not in self.results:
            self.results["crash.sqlite"] = self.supervisor_crash("sqlite", None)
        try:
            for variant in PEER_VARIANTS:
                conn.flushdb()
                found[variant.key] = self.peer(variant, conn)
        finally:
            conn.flushdb()
            conn.close()

    def supervisor_record_latency(self) -> dict[str, Any]:
        """Due → first line and due → finished record visible: one latency worker every PEER_SPACING on SQLite,
        whose finished runs another connection looks for every POLL_STEP."""
        n, warm = self.plan.peer_samples, 10  # the first runs come while start-up's records are written
        self.say(f"peers: supervisor, due → first line and → finished record, a run every {PEER_SPACING:g} s")
        work = self.scratch("peers.supervisor")
        out = work / "runs.txt"
        db = self.sqlite("peers.supervisor")
        seen: dict[str, float] = {}
        env = bench_env(out=out, scenario="latency", workers=10, active=1, interval=PEER_SPACING)
        with Supervised("supervisor", db, "benchworkers.lean", env, work) as s:
            reader = Reader(db)
            s.wait_workers(10, reader)
            deadline = time.monotonic() + 60 + (warm + n) * PEER_SPACING * 4
            lines: list[list[str]] = []
            polls = 0
            while time.monotonic() < deadline:
                for (run_id,) in reader.rows("SELECT id FROM run WHERE finished_at IS NOT NULL "
                                             "ORDER BY started_at DESC LIMIT 3"):
                    seen.setdefault(run_id, time.time())
                polls += 1
                if polls % 100 == 0:
                    lines = read_lines(out)[warm:warm + n]
                    if len(lines) == n and all(x[0] in seen for x in lines):
                        break
                time.sleep(POLL_STEP)
            reader.close()
        due = {x[0]: float(x[2]) - float(x[1]) for x in lines}  # the first line's clock less its lateness
        return {"first_line": dist([float(x[1]) for x in lines]),
                "record": dist([seen[run] - at for run, at in due.items() if run in seen])}

    def peer(self, variant: PeerVariant, conn: Any) -> dict[str, Any]:
        """One peer alone: started, warmed, then latency, throughput and crashes measured; stopped."""
        module = importlib.import_module(variant.script)
        name = module.NAMES[variant.variant]
        self.say(f"peers: {name}, {variant.processes} process(es) of {variant.script}.py")
        work = self.scratch(f"peers.{variant.key}")
        out = work / "lines.txt"
        client = module.Client(REDIS_URL)
        found: dict[str, Any] = {"name": name}
        try:
            with contextlib.ExitStack() as stack:
                roots = [stack.enter_context(Peer(f"{variant.key}-{i}", work, bench_env(out=out, redis=REDIS_URL),
                                                  script=f"{variant.script}.py", variant=variant.variant)).process
                         for i in range(variant.processes)]
                self.watch(client, [client.submit("trivial") for _ in range(2 * CORES)], 60)  # warm
                found.update(self.peer_latency(client, out))
                found["throughput"] = self.peer_throughput(client, conn, roots)
                found.update(self.peer_crash(client, out, roots))
        finally:
            client.close()
        found["leftovers"] = stop_leftovers(out)
        return found

    def watch(self, client: Any, ids: list[str], timeout: float, step: float = POLL_STEP,
              give_up: Callable[[], bool] | None = None) -> dict[str, tuple[str, float]]:
        """Look for the jobs' records every `step`, over the client's other connection (not the one that submitted
        them): each one's state (finished, failed) and when it was first seen. `give_up` is asked every 50 ms."""
        pending, seen = set(ids), {}
        deadline = time.monotonic() + timeout
        asked = time.monotonic()
        while pending and time.monotonic() < deadline:
            states = client.states(pending)
            now = time.time()
            for job, state in states.items():
                seen[job] = (state, now)
                pending.discard(job)
            if give_up is not None and time.monotonic() - asked > 0.05:
                asked = time.monotonic()
                if give_up():
                    break
            if pending:
                time.sleep(step)
        return seen

    def peer_latency(self, client: Any, out: Path) -> dict[str, Any]:
        """Submit → first line and submit → finished record: one job at a time, PEER_SPACING apart, on an idle system,
        for at most `peer_seconds`."""
        warm = 3
        submitted, seen = {}, {}
        until = time.monotonic() + self.plan.peer_seconds
        for k in range(warm + self.plan.peer_samples):
            if time.monotonic() > until:
                break
            token = f"probe-{k:04d}"
            at = time.time()
            job = client.submit("first_line", token, at)
            submitted[token] = at
            got = self.watch(client, [job], 60)
            if job in got:
                seen[token] = got[job][1]
            time.sleep(max(0.0, at + PEER_SPACING - time.time()))
        first = {x[0]: float(x[1]) for x in read_lines(out) if x[0].startswith("probe-")}
        measured = list(submitted)[warm:]
        return {"first_line": dist([first[t] for t in measured if t in first]),
                "record": dist([seen[t] - submitted[t] for t in measured if t in seen])}

    def peer_throughput(self, client: Any, conn: Any, roots: list[psutil.Process]) -> dict[str, Any]:
        """`peer_jobs` trivial jobs, all queued while every worker is held by a gate job, then released at once:
        jobs per second from the release to the last record seen, and the CPU of the peer's processes meanwhile."""
        jobs, gate = self.plan.peer_jobs, "bench:gate"
        for _ in range(CORES):
            client.submit("gate", gate)
        wait_until(lambda: int(conn.get(gate + ":held") or 0) >= CORES, 60, "every worker held by a gate job")
        ids = [client.submit("trivial") for _ in range(jobs)]
        before = [cpu_snapshot(r) for r in roots]
        released = time.time()
        conn.rpush(gate, *["go"] * CORES)
        seen = self.watch(client, ids, 60 + jobs, step=PEER_STEP)

        def settled() -> bool:  # a job process that ended is reaped, so its CPU is in its parent's children's time
            return not any(p.is_running() and not alive(p) for r in roots for p in tree(r)[1:])

        with contextlib.suppress(TimeoutError):
            wait_until(settled, 5, "the job processes reaped", step=0.001)
        after = [cpu_snapshot(r) for r in roots]
        done = [at for state, at in seen.values() if state == "finished"]
        total = sum(tree_cpu_delta(b, a) for b, a in zip(before, after))
        own = sum(a[k][0] - b[k][0] for r, b, a in zip(roots, before, after) for k in [(r.pid, r.create_time())])
        count = max(1, len(done))
        return {"rate": len(done) / (max(done) - released) if done else math.nan, "jobs": len(done),
                "cpu_per_job_ms": total / count * 1e3, "children_cpu_per_job_ms": (total - own) / count * 1e3}

    def peer_crash(self, client: Any, out: Path, roots: list[psutil.Process]) -> dict[str, Any]:
        """Segfault → failure record, `peer_crashes` times, PEER_SPACING apart. No record NEVER_AFTER after the crash,
        or none when the worker process that ran the job has died (none is left to write it), is "never", and the
        crashes stop there. Keeps what the system stored of the last."""
        samples, never, kept = [], 0, ""
        until = time.monotonic() + self.plan.peer_seconds
        for k in range(self.plan.peer_crashes):
            if time.monotonic() > until:
                break
            token = f"crash-{k:04d}"
            at = time.time()
            job = client.submit("crash", token)

            def crashed(token: str = token) -> float | None:
                return next((float(x[1]) for x in read_lines(out) if x[0] == token), None)

            def gone(crashed: Callable[[], float | None] = crashed) -> bool:
                when = crashed()
                return when is not None and (time.time() - when > NEVER_AFTER or not all(map(alive, roots)))

            got = self.watch(client, [job], 60 + NEVER_AFTER, give_up=gone)
            kept = client.kept(job)
            if job not in got:
                never += 1
                break
            samples.append(got[job][1] - wait_until(crashed, 10, f"the time of {token}"))
            time.sleep(max(0.0, at + PEER_SPACING - time.time()))
        return {"crash": dist(samples), "never": never, "kept": kept}


# -- the table -----------------------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.{digits}f}"


def ratio(ours: float | None, other: float | None) -> str:
    if ours is None or other is None or other == 0 or math.isnan(ours) or math.isnan(other):
        return "—"
    return f"{ours / other:.2f}×"


def pair(d: dict[str, float] | None) -> str:
    return "—" if not d else f"{fmt(d['p50'])} / {fmt(d['p99'])}"


@dataclass
class Row:
    measure: str
    ours: str
    floor: str
    vs_floor: str
    aps_default: str
    vs_default: str
    aps_fresh: str
    vs_fresh: str
    target: str
    verdict: str


def verdict(ok: bool | None) -> str:
    return "—" if ok is None else ("met" if ok else "**missed**")


def every10_verdict(ours: float, default: dict[str, Any] | None, fresh: dict[str, Any] | None) -> str:
    """Met or missed against each APScheduler variant's scheduler process."""
    said = []
    for name, peer in (("default", default), ("fresh", fresh)):
        if peer:
            said.append(f"{'met' if ours < peer['alone']['main'] else '**missed**'} vs {name}")
    return "; ".join(said) or "—"


def build_rows(r: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for module in ("lean", "heavy"):
        for workers in (10, 1000):
            lat = r.get(f"latency.{module}.{workers}")
            floor = r.get(f"floor.fork.{module}.{workers}")
            if not lat:
                continue
            ours, fl = lat["supervisor"], (floor or {}).get("start")
            d, f = lat.get("aps_default"), lat.get("aps_fresh")
            ok = None if not fl else ours["p50"] <= 2 * fl["p50"] and (workers < 1000 or ours["p99"] < 10)
            rows.append(Row(
                f"start latency, {workers} workers, {module} module (ms)", pair(ours), pair(fl),
                ratio(ours["p50"], fl and fl["p50"]), pair(d), ratio(ours["p50"], d and d["p50"]), pair(f),
                ratio(ours["p50"], f and f["p50"]), "p50 ≤ 2× floor" + ("; p99 < 10 ms" if workers == 1000 else ""),
                verdict(ok)))
            exec_run = lat.get("supervisor_exec")
            if exec_run:
                # A fresh interpreter per run: its peer is APScheduler's fresh process per run, not the fork floor.
                rows.append(Row(
                    f"start latency, {workers} workers, {module} module, isolation = exec (ms)", pair(exec_run), "—",
                    "—", pair(d), ratio(exec_run["p50"], d and d["p50"]), pair(f),
                    ratio(exec_run["p50"], f and f["p50"]), "— (a cost to know: an interpreter's start and the "
                    "module's import, every run)", verdict(None)))
    none, failing = r.get("alerts.none"), r.get("alerts.failing")
    if none and failing:
        ours, base = failing["latency"], none["latency"]
        ok = ours["p50"] <= base["p50"] * 1.5 + 0.5 and failing["rss_growth_mb"] < 20
        rows.append(Row(
            "start latency, 10 workers, alerts to a webhook that hangs and an SMTP server that refuses (ms)",
            pair(ours), pair(base), ratio(ours["p50"], base["p50"]), "—", "—", "—", "—",
            f"unchanged (floor here: no sinks); supervisor RSS grew {failing['rss_growth_mb']:.1f} MB", verdict(ok)))
    for kind in ("sqlite", "postgres"):
        c, fl = r.get(f"crash.{kind}"), (r.get(f"floor.row.{kind}") or {}).get("crash")
        if not c:
            continue
        ours = c["supervisor"]
        d, f = c.get("aps_default"), c.get("aps_fresh")
        rows.append(Row(
            f"crash to record, {'SQLite' if kind == 'sqlite' else 'PostgreSQL'} (ms)", pair(ours), pair(fl),
            ratio(ours["p50"], fl and fl["p50"]), pair(d), ratio(ours["p50"], d and d["p50"]), pair(f),
            ratio(ours["p50"], f and f["p50"]), "p50 < 5 ms" if kind == "sqlite" else "—",
            verdict(ours["p50"] < 5) if kind == "sqlite" else "—"))
    for kind in ("sqlite", "postgres"):
        t, fl = r.get(f"throughput.{kind}"), r.get(f"floor.row.{kind}") or {}
        if not t:
            continue
        ours = t["supervisor"]["rate"]
        floor_rate = fl.get("rate_fork_row")
        d, f = t.get("aps_default"), t.get("aps_fresh")
        ok = None
        if kind == "sqlite" and floor_rate:
            ok = ours >= 0.7 * floor_rate and (f is None or ours > 30 * f["rate"])
        offered = t.get("offered") or math.inf

        def rate(found: dict[str, Any] | None) -> str:
            # A rate at the offered load is a lower bound: the peer could have done more.
            if not found:
                return "—"
            return ("≥ " if found["rate"] >= 0.95 * offered else "") + fmt(found["rate"])

        rows.append(Row(
            f"throughput, {CORES} at once, {'SQLite' if kind == 'sqlite' else 'PostgreSQL'} (runs/s)", fmt(ours),
            fmt(floor_rate), ratio(ours, floor_rate), rate(d), ratio(ours, d and d["rate"]),
            rate(f), ratio(ours, f and f["rate"]),
            "≥ 0.7× floor; > 30× APS fresh" if kind == "sqlite" else "—", verdict(ok)))
    w = r.get("waiting.idle")
    if w:
        for what, ours in (("supervisor alone", w["alone"]["supervisor"]), ("all its processes", w["all"]["supervisor"])):
            d_key = "alone" if what == "supervisor alone" else "all"
            d, f = w[d_key]["aps_default"], w[d_key]["aps_fresh"]
            rows.append(Row(f"waiting, 1000 workers not due, {what} (% of a core)", fmt(ours, 3), "—", "—",
                            fmt(d, 3), ratio(ours, d), fmt(f, 3), ratio(ours, f), "< 0.05 %", verdict(ours < 0.05)))
    w = r.get("waiting.every10")
    if w and "supervisor" in w:
        ours = w["supervisor"]
        d, f = w.get("aps_default"), w.get("aps_fresh")
        rows.append(Row("waiting, 200 workers every 10 s, supervisor alone (% of a core)", fmt(ours["alone"]["main"], 3),
                        "—", "—", fmt(d and d["alone"]["main"], 3), ratio(ours["alone"]["main"], d and d["alone"]["main"]),
                        fmt(f and f["alone"]["main"], 3), ratio(ours["alone"]["main"], f and f["alone"]["main"]),
                        "< APScheduler's scheduler", every10_verdict(ours["alone"]["main"], d, f)))
        rows.append(Row("waiting, 200 workers every 10 s, all processes (% of a core)", fmt(ours["all"], 3), "—", "—",
                        fmt(d and d["all"], 3), ratio(ours["all"], d and d["all"]), fmt(f and f["all"], 3),
                        ratio(ours["all"], f and f["all"]), "—", "—"))
    size, floor, peer = r.get("size.lean.1000"), r.get("floor.fork.lean.1000"), r.get("size.aps.1000", {})
    if size:
        mb = 2**20
        d, f = peer.get("aps_default"), peer.get("aps_fresh")
        rows.append(Row("RSS of the supervisor, 1000 workers (MB)", fmt(size["supervisor"]["rss"] / mb), "—", "—",
                        fmt(d and d["main_rss"] / mb), ratio(size["supervisor"]["rss"], d and d["main_rss"]),
                        fmt(f and f["main_rss"] / mb), ratio(size["supervisor"]["rss"], f and f["main_rss"]),
                        "< 80 MB", verdict(size["supervisor"]["rss"] < 80 * mb)))
        spawner_ok = None if not floor else size["spawner"]["rss"] <= 1.5 * floor["rss"]
        rows.append(Row("RSS of the spawner, 1000 lean workers (MB)", fmt(size["spawner"]["rss"] / mb),
                        fmt(floor and floor["rss"] / mb), ratio(size["spawner"]["rss"], floor and floor["rss"]),
                        "—", "—", "—", "—", "about the modules' own size", verdict(spawner_ok)))
        heavy, heavy_floor = r.get("size.heavy.1000"), r.get("floor.fork.heavy.1000")
        if heavy and heavy_floor:
            rows.append(Row("RSS of the spawner, 1000 heavy workers (MB)", fmt(heavy["spawner"]["rss"] / mb),
                            fmt(heavy_floor["rss"] / mb), ratio(heavy["spawner"]["rss"], heavy_floor["rss"]),
                            "—", "—", "—", "—", "about the modules' own size",
                            verdict(heavy["spawner"]["rss"] <= 1.5 * heavy_floor["rss"])))
        rows.append(Row("RSS of the recorder, 1000 workers (MB)", fmt(size["recorder"]["rss"] / mb), "—", "—",
                        "—", "—", "—", "—", "—", "—"))
        rows.append(Row("open fds: supervisor / spawner / recorder, 1000 workers",
                        f"{size['supervisor']['fds']} / {size['spawner']['fds']} / {size['recorder']['fds']}", "—", "—",
                        str(d["fds"]) if d else "—", "—", str(f["fds"]) if f else "—", "—", "—", "—"))
    for module in ("lean", "heavy"):
        fl = r.get(f"floor.fork.{module}.1000")
        if fl:
            rows.append(Row(f"floor: fork + pipe + reap, {module} parent ({fl['rss'] / 2**20:.0f} MB) (ms)", "—",
                            pair(fl["cycle"]), "—", "—", "—", "—", "—", "—", "—"))
    for kind in ("sqlite", "postgres"):
        fl = r.get(f"floor.row.{kind}") or {}
        if "insert" in fl:
            rows.append(Row(f"floor: one Peewee row insert, {kind} (ms)", "—", pair(fl["insert"]), "—", "—", "—", "—",
                            "—", "—", "—"))
        if "rate_fork" in fl:
            rows.append(Row(f"floor: fork+pipe+reap alone, {CORES} at once, {kind} parent (runs/s)", "—",
                            fmt(fl["rate_fork"]), "—", "—", "—", "—", "—", "—", "—"))
    return rows


HEADER = ("measure", "supervisor p50 / p99", "floor p50 / p99", "÷ floor", "APS default p50 / p99", "÷ APS default",
          "APS fresh p50 / p99", "÷ APS fresh", "target", "")


def markdown_table(rows: list[Row] | list[PeerRow], header: tuple[str, ...] = HEADER) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(row.__dict__.values()) + " |")
    return "\n".join(lines)


@dataclass
class PeerRow:
    figure: str
    ours: str
    rq_fork: str
    rq_simple: str
    celery_fresh: str
    celery_reused: str
    target: str
    verdict: str


PEER_HEADER = ("figure", "this project", "RQ, fork per job", "RQ, no fork", "Celery, fresh process per task",
               "Celery, reused pool", "target", "")


def build_peer_rows(r: dict[str, Any]) -> list[PeerRow]:
    """Issue 16's table: the five figures of the supervisor and of each peer, then the ratios its targets name."""
    peers = r.get("peers")
    if not peers or "skipped" in peers:
        return []
    ours = peers.get("supervisor") or {}
    t, c = r.get("throughput.sqlite") or {}, r.get("crash.sqlite") or {}
    floor_rate = (r.get("floor.row.sqlite") or {}).get("rate_fork_row")
    ours_rate = t["supervisor"]["rate"] if t else None
    ours_cpu = t.get("tree_cpu_per_run_ms", sum(t["cpu_per_run_ms"].values())) if t else None

    def each(show: Callable[[dict[str, Any]], str]) -> list[str]:
        return [show(peers[v.key]) if v.key in peers else "—" for v in PEER_VARIANTS]

    def crash(found: dict[str, Any]) -> str:
        return "never: the worker dies with the job" if found["never"] else pair(found["crash"])

    def peer(key: str, *path: str) -> float | None:
        found: Any = peers.get(key)
        for step in path:
            found = found.get(step) if found else None
        return found

    record = ours.get("record")
    rows = [
        PeerRow(f"throughput, {CORES} in flight, each recorded (jobs/s)", fmt(ours_rate),
                *each(lambda f: fmt(f["throughput"]["rate"])), "—", "—"),
        PeerRow("CPU per job in the system's processes (ms)", fmt(ours_cpu),
                *each(lambda f: fmt(f["throughput"]["cpu_per_job_ms"])), "—", "—"),
        PeerRow("… of which in the job's processes: run child / work horse / pool (ms)", fmt(t.get("runs_cpu_ms")),
                *each(lambda f: fmt(f["throughput"]["children_cpu_per_job_ms"])), "—", "—"),
        PeerRow("submit (ours: due) → job's first line (ms, p50 / p99)", pair(ours.get("first_line")),
                *each(lambda f: pair(f["first_line"])), "—", "—"),
        PeerRow("submit (ours: due) → record says finished (ms, p50 / p99)", pair(record),
                *each(lambda f: pair(f["record"])), "p50 ≤ 20 ms", verdict(record["p50"] <= 20 if record else None)),
        PeerRow("segfault → failure record (ms, p50 / p99)", pair(c.get("supervisor")), *each(crash), "—", "—"),
    ]
    for what, other, target, least in (
            ("throughput ÷ Celery, reused pool", peer("celery_reused", "throughput", "rate"), "≥ 1×", 1.0),
            ("throughput ÷ RQ, no fork", peer("rq_simple", "throughput", "rate"), "≥ 1×", 1.0),
            (f"throughput ÷ the fork + row floor ({fmt(floor_rate)} runs/s)", floor_rate, "≥ 0.9×", 0.9)):
        ok = None if not (ours_rate and other) else ours_rate / other >= least
        rows.append(PeerRow(what, ratio(ours_rate, other), "—", "—", "—", "—", target, verdict(ok)))
    rq_cpu = peer("rq_simple", "throughput", "cpu_per_job_ms")
    rows.append(PeerRow("CPU per job ÷ RQ, no fork", ratio(ours_cpu, rq_cpu), "—", "—", "—", "—", "≤ 1×",
                        verdict(None if not (ours_cpu and rq_cpu) else ours_cpu <= rq_cpu)))
    return rows


def machine() -> dict[str, str]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": model,
        "cores": str(CORES),
        "memory": f"{psutil.virtual_memory().total / 2**30:.0f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter windows and fewer samples (for development)")
    parser.add_argument("--only", help=f"comma-separated sections: {', '.join(SECTIONS)}")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only, even if a server answers")
    parser.add_argument("--write", help="where the markdown goes (default: docs/benchmarks.md, or bench/out/ when quick)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (logs, databases)")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    sections = args.only.split(",") if args.only else list(SECTIONS)
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
    help_text = subprocess.run([PY, "-m", "supervisor", "run", "--help"], capture_output=True, text=True).stdout
    max_children = "--max-children" in help_text
    OUT.mkdir(exist_ok=True)
    started = time.monotonic()
    load_before = os.getloadavg()
    workdir = Path(tempfile.mkdtemp(prefix="bench-", dir=OUT))
    use_pg = not args.no_postgres and postgres_reachable()
    with contextlib.ExitStack() as stack:
        if not args.keep:
            stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        pg = stack.enter_context(postgres_database(f"bench_ws_{os.getpid()}")) if use_pg else None
        bench = Bench(plan, workdir, pg, max_children)
        bench.say(f"{'quick' if args.quick else 'full'} run; sections {', '.join(sections)}; PostgreSQL "
                  f"{'yes' if pg else 'no'}; --max-children {'passed' if max_children else 'not supported yet'}")
        for section in SECTIONS:
            if section in sections:
                getattr(bench, f"run_{section}")()
    elapsed = time.monotonic() - started
    info = machine()
    loads = [load_before[0], *bench.loads, os.getloadavg()[0]]
    info["1-min load average during the run (min / median / max)"] = (
        f"{min(loads):.2f} / {pct(loads, 0.5):.2f} / {max(loads):.2f} (this run alone adds about 1)")
    info["duration"] = f"{elapsed:.0f} s"
    info["--max-children"] = f"{CORES} (throughput)" if max_children else "not supported by this supervisor yet"
    raw = {"machine": info, "plan": plan.__dict__, "results": bench.results}
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (OUT / f"results-{stamp}{'-quick' if args.quick else ''}.json").write_text(json.dumps(raw, indent=1))
    table = markdown_table(build_rows(bench.results))
    peer_rows = build_peer_rows(bench.results)
    peers_table = markdown_table(peer_rows, PEER_HEADER) if peer_rows else ""
    print()
    print(table)
    if peers_table:
        print()
        print(peers_table)
    print()
    print(" · ".join(f"{k}: {v}" for k, v in info.items()))
    target = Path(args.write) if args.write else (OUT / "benchmarks-quick.md" if args.quick else ROOT / "docs" / "benchmarks.md")
    from report import write_markdown

    write_markdown(target, table, info, bench.results, plan, quick=args.quick, peers_table=peers_table)
    print(f"wrote {target}")
    if args.keep:
        print(f"kept the logs and databases in {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Write docs/benchmarks.md: how it was measured, the machine, the table of this run, and the notes.

Everything above the notes marker is written anew on each run; the notes below it (what a missed target costs
and where its time goes, from a profile) are written by hand and kept as they are.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

NOTES_MARKER = "<!-- notes: written by hand, kept by bench/report.py across runs -->"

METHOD = """\
Every figure comes from one run of `make bench` (bench/run.py) on the machine below: the supervisor as a user
runs it (`python -m supervisor run --db sqlite:///… --workers benchworkers.lean`, a real process tree on a real
SQLite file, default log level, output to a file), its floors, and its peer, each measured by the same script
in the same run. Per-process CPU, RSS and descriptors are read with psutil from outside the process tree; runs
report their own timings (bench/benchworkers/_common.py). Each ratio is the supervisor's figure divided by the
other's (p50 by p50): below 1× the supervisor is faster or smaller, above 1× slower or bigger; for throughput,
above 1× means more runs per second.

- **Start latency**: from a run's slot (`ctx.due_at`, the Unix time of the slot the run is for) to the first
  line of its `run()` in the child, which reads `time.time()` and appends the difference to a file afterwards.
  One worker runs every 50 ms; the other 9 or 999 registered workers are due only in an hour, so each run is
  due alone and the figure is the cost of one run, not of a queue. The first 10 runs (during start-up) are
  left out. *Lean*: the module imports only the worker API. *Heavy*: it imports numpy, asyncio, email, ssl,
  sqlite3, xml and more and holds ~200 MB (100 MB numpy array, 1 M small strings), all resident.
  *Floor* (each floor is measured just before the supervisor's turn on the same workload, so that both see
  the same machine): `os.fork()` to the child's first line, from a parent that imported the same modules through the
  same discovery as the spawner (its RSS is shown in the size rows); the child then sends a small result over
  a pipe and is reaped (the whole cycle is the "fork + pipe + reap" floor row). The supervisor can come in
  under this floor: its spawner forks each run's child ahead of time (a standby child, supervisor/spawn/standby.py),
  so a run's start pays for a message, not a fork; the fork's cost moves off the start, not out of the
  run's CPU (see throughput).
  *Peer*: one-off APScheduler jobs, each given its due time, in a scheduler with the same number of jobs;
  the first run is a warm-up (in the default pool it imports the module into the pool process).
- **Crash to record**: a worker writes `time.time()` and then dereferences NULL (SIGSEGV, faulthandler on,
  as in every run); another connection (the benchmark's, stdlib sqlite3 or psycopg in autocommit) looks for new
  `failure` rows every 0.5 ms and notes when the run's row is first visible. The figure is an upper bound by
  up to one poll step plus one query (the resolution). *Floor*: the same crash in a child of the floor
  process, which blocks in `waitpid`, then commits one failure row with Peewee (no polling: the commit's
  return is the moment). *Peer*: APScheduler's pool process segfaults; an `EVENT_JOB_ERROR` listener (a
  user's own record, since APScheduler keeps none) commits a failure row through Peewee with the store's
  pragmas, looked for by the same poller.
- **Throughput**: 50 trivial workers each due every 20 ms (2,500 runs a second owed, more than the machine can
  start) with `--max-children` = cores, so whenever a run ends an owed one starts: runs due back to back, as
  many children at once as cores. (A supervisor without `--max-children` gets as many workers as cores, each
  due every millisecond.) Recorded runs per second = rows of `run` with `finished_at` committed, counted by
  another connection over the window after a 2 s warm-up. *Floor*: one process of the spawner's
  size keeps as many children in flight as cores; per run: fork, a small result over a pipe, reap, and one
  Peewee row insert committed (the "fork per run plus one row per run" of issue 6). *Peer*: the same jobs on the same
  schedule (coalesced, `max_instances=1`) in a pool of as many processes as cores, executions counted by an
  `EVENT_JOB_EXECUTED` listener; APScheduler writes no record at all, which favours it.
- **Waiting**: CPU time (user + system) used over the window, as a percentage of one core: *alone* is the one
  process (the supervisor; APScheduler's scheduler process with all its threads); *all* is the whole process
  tree, runs included (a process that ends within the window is counted through its parent's reaped-children
  time). With 1,000 workers not due, the supervisor and both APScheduler variants wait side by side in one
  window (all idle, so they do not compete). With 200 workers every 10 s (all on one grid) each is measured
  alone, in a window that starts 5 s after a burst, so it holds whole bursts only; APScheduler's windows are
  shorter (see the plan below), which changes no percentage. A process's own CPU is read from the scheduler's nanosecond counters
  (/proc/PID/task/*/schedstat); a reaped child's only in 10 ms ticks.
- **Size**: RSS and open descriptors after the 1,000-worker wait (lean module), and of the spawner holding the
  heavy module (from the start-latency run with 1,000 heavy workers). The spawner's floor is the RSS of the
  floor process, which imported the same modules. APScheduler's figure is its scheduler process with 1,000 jobs.
- **Peers**: APScheduler 3 (`BackgroundScheduler`, memory job store, `apscheduler.executors.pool.ProcessPoolExecutor`
  with `max_workers` = cores, which APScheduler 3.11 runs in the *spawn* context): *default* reuses its pool
  processes; *fresh* passes `pool_kwargs={"max_tasks_per_child": 1}`, a new process per run, the isolation
  the supervisor gives. PostgreSQL rows (when a server answers on 127.0.0.1:5432) use a database the run
  creates and drops.
- **RQ and Celery (issue 16)**, when Redis answers on 127.0.0.1:6379 (otherwise the section is skipped and
  says why): each system alone in turn, in the benchmark's virtualenv, on a Redis database number of its own
  (13), emptied before each and after. The jobs are plain functions of bench/benchworkers/peerjobs.py, imported
  by the workers before they start. *RQ, fork per job*: 2 `rq.Worker` processes (a forked work horse per job);
  *RQ, no fork*: 2 `rq.SimpleWorker` processes; *Celery, fresh process per task*: one worker with a prefork
  pool, `--concurrency 2 --max-tasks-per-child 1`; *Celery, reused pool*: the same without the limit, Redis as
  its broker and result backend, every result stored (`ignore_result=False`). All log at their default level.
  The benchmark process submits (RQ `Queue.enqueue`, Celery `task.delay()`) on one connection and looks for
  the records on another: RQ's job status (`finished` / `failed` in the job's hash), Celery's stored result
  (`SUCCESS` / `FAILURE`). For this project "submit" is the run's slot (`ctx.due_at`): a worker's schedule is
  how work is submitted to it.
  - *Throughput* (jobs/s): 200 trivial jobs (100 in a quick run), each recorded, 2 in flight. The workers are
    started and warm; each is held by a gate job (blocked on a Redis list) while the jobs are queued, then
    both are released at once: jobs over the time from the release to the last record seen (looked for
    every 5 ms). This project's figure is the throughput row above (runs due back to back, `--max-children`
    2, recorded rows counted over the window).
  - *CPU per job* (ms): user + system CPU of all the system's processes over that window, divided by the
    jobs: RQ's workers with their work horses; Celery's main process with its pool; this project's whole
    `python -m supervisor run` tree (supervisor, spawner with its run children, recorder) over the throughput
    row's window. Redis's own CPU is counted for no one (this project's SQLite work is in its recorder). The
    next row is the part spent in the job's own processes: run children, work horses, pool processes (their
    reaped time, in 10 ms ticks).
  - *Submit → first line* and *submit → record says finished* (ms, p50 / p99): 50 jobs (20 in a quick run),
    or as many as 30 s allow (10 s), submitted one at a time, 100 ms apart, on an idle system (the first 3
    left out); the submit time is read just before the enqueue and passed to the job, whose first line
    appends the difference; the other connection looks for the job's record every 0.5 ms and notes when it
    is first seen. (Celery's fresh-process pool makes about one task in four wait 4 to 5 s, about the period
    of its pool's maintenance timer, 5 s: that is its p99, and why the phase has a time limit.) For this
    project: one worker every 100 ms (9 others idle) on a SQLite file of its own, its first line reporting its
    lateness to the slot (as in start latency), and `run.finished_at` committed looked for every 0.5 ms (the
    first 10 runs left out).
  - *Segfault → failure record* (ms): the job writes the time and dereferences NULL, 10 times (5 in a quick
    run), or as many as 30 s allow (10 s), 100 ms apart; the record is looked for every 0.5 ms (RQ: status
    `failed`; Celery: `FAILURE` with `WorkerLostError`). "never": none came within 15 s, or none came and the
    worker process that ran the job is dead. An `rq.SimpleWorker` dies with its job, which stays `started`
    until a surviving worker's maintenance (every 10 minutes) finds its heartbeat expired and fails it as
    abandoned, with no word of the signal. Celery notices a dead pool process when its event loop sees the
    exit, or else at its `maintain_pool` timer (every 5 s). This project's figure is the crash-to-record row
    above.
  - *What each keeps of a crash*: the text each stores of the last crash (shortened): this project's `failure`
    row (from the crash-to-record run), RQ's job status and latest result, Celery's stored result.
"""


def _split_line(measure: str, first: str, a: dict[str, float], second: str, b: dict[str, float]) -> str:
    """One line of "where the time goes": a measure split in two at a moment the supervisor records."""
    return (f"- {measure}: {first} {a['p50']:.2f} / {a['p99']:.2f} ms; from there → {second} "
            f"{b['p50']:.2f} / {b['p99']:.2f} ms (p50 / p99).")


def _shorten(text: str, lines: int = 14, width: int = 160) -> str:
    """At most `lines` lines of at most `width` characters, with what was left out said."""
    kept = text.strip().splitlines()
    short = [line if len(line) <= width else line[:width] + " …" for line in kept[:lines]]
    if len(kept) > lines:
        short.append(f"… ({len(kept) - lines} more lines)")
    return "\n".join(short)


def _peers(results: dict[str, Any], table: str) -> list[str]:
    """Issue 16's section: the table against RQ and Celery, and what each system keeps of a crash."""
    peers = results.get("peers")
    if not peers:
        return []
    body = ["## Against RQ and Celery (issue 16)", ""]
    if "skipped" in peers:
        return body + [f"Not measured in this run: {peers['skipped']}.", ""]
    body += ["Each system alone in turn, the same trivial job, as many in flight as cores. Times in ms, p50 / p99; "
             "÷ rows: this project's figure divided by the other's.", "", table, ""]
    left = {v.get("name", k): v["leftovers"] for k, v in peers.items() if isinstance(v, dict) and v.get("leftovers")}
    if left:
        body += ["Processes left running after a peer's stop, then killed: "
                 + ", ".join(f"{k}: {n}" for k, n in left.items()) + ".", ""]
    body += ["### What each keeps of a crash", "",
             "The text each system stores of the segfault (shortened), as its operator would read it:", ""]
    ours = results.get("crash.sqlite", {}).get("kept")
    kept = [("This project: the run's `failure` row", ours)] + [
        (f"{found['name']}", found.get("kept")) for key, found in peers.items()
        if key != "supervisor" and isinstance(found, dict) and "name" in found]
    for name, text in kept:
        body += [f"- {name}:", "", "  ```", *("  " + line for line in _shorten(text or "—").splitlines()), "  ```", ""]
    return body


def write_markdown(target: Path, table: str, info: dict[str, str], results: dict[str, Any], plan: Any,
                   quick: bool, peers_table: str = "") -> None:
    """Write the document; keep the hand-written notes of the one already there."""
    notes = ""
    if target.exists():
        text = target.read_text()
        if NOTES_MARKER in text:
            notes = text.split(NOTES_MARKER, 1)[1].strip()
    machine = "\n".join(f"| {k} | {v} |" for k, v in info.items())
    plan_line = ", ".join(f"{k} = {v}" for k, v in plan.__dict__.items())
    extra = []
    for module in ("lean", "heavy"):
        for workers in (10, 1000):
            parts = results.get(f"latency.{module}.{workers}", {}).get("parts")
            if parts and parts["due_to_request"]["n"]:
                extra.append(_split_line(
                    f"start latency, {workers} workers, {module}",
                    "due → the supervisor makes the run (its `started_at`)", parts["due_to_request"],
                    "the worker's first line (request, spawner, hand-over to the standby child, its last steps)",
                    parts["request_to_first_line"]))
    for kind in ("sqlite", "postgres"):
        parts = results.get(f"crash.{kind}", {}).get("parts")
        if parts and parts["crash_to_classified"]["n"]:
            extra.append(_split_line(
                f"crash to record on {kind}",
                "crash → the supervisor classifies the run (its `finished_at`)", parts["crash_to_classified"],
                "the row visible (journal, recorder, commit, poll)", parts["classified_to_visible"]))
    idle = results.get("waiting.idle")
    if idle:
        alone = idle["alone"]
        extra.append(f"- waiting with 1,000 workers not due, per process: supervisor {alone['supervisor']:.3f} %, spawner "
                     f"{alone['spawner']:.3f} %, recorder {alone['recorder']:.3f} % of a core (on SQLite the recorder "
                     "sleeps until inotify reports the database's files written, with a look every 5 s as a safety "
                     "net; it prunes once, 60 s after it starts, then every 10 minutes).")
    every10 = results.get("waiting.every10", {}).get("supervisor")
    if every10:
        alone = every10["alone"]
        extra.append(f"- waiting with 200 workers every 10 s, per process: supervisor {alone['main']:.3f} %, spawner "
                     f"{alone['spawner']:.3f} % (its own work, not its children's), recorder {alone['recorder']:.3f} % "
                     "of a core.")
    for kind in ("sqlite", "postgres"):
        t = results.get(f"throughput.{kind}")
        if t and "cpu_per_run_ms" in t:
            per = t["cpu_per_run_ms"]
            extra.append(f"- CPU per run at full throughput on {kind} ({t.get('shape', '')}): supervisor "
                         f"{per['supervisor']:.2f} ms, spawner with its children (the runs) {per['spawner']:.2f} ms, "
                         f"recorder {per['recorder']:.2f} ms.")
        c = results.get(f"crash.{kind}")
        if c and c.get("unseen"):
            extra.append(f"- crash on {kind}: {c['unseen']} crash(es) had no row yet when the window closed.")
    body = [
        "# Benchmarks: the price of isolation",
        "",
        "Produced by `make bench` (bench/run.py; a quick run: `make bench BENCH_ARGS=--quick`)."
        + (" **This is a quick run: short windows, few samples.**" if quick else ""),
        "",
        "## How it is measured",
        "",
        METHOD,
        "## The machine",
        "",
        "| | |",
        "|---|---|",
        machine,
        "",
        f"Plan: {plan_line}.",
        "",
        "## The table",
        "",
        "Times in ms, p50 / p99 (nearest rank). ÷ columns: the supervisor's p50 divided by the other's.",
        "",
        table,
        "",
        "Where the time goes, from the same run (the clocks are the same machine's `time.time()`; a row's "
        "`started_at` and `finished_at` are taken by the supervisor):",
        "",
        *extra,
        "",
        *_peers(results, peers_table),
        NOTES_MARKER,
        "",
        notes,
        "",
    ]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join(body))

"""`health`: one exit status a monitor can act on, read from the database (so it works from any host that
reaches it, and says the same as `status`).

0 healthy; 1 degraded: a worker broken, quarantined, failing or overdue (or whether a supervisor runs cannot be
told); 2 down: no supervisor is alive, or the database cannot be read. A worker an operator paused is not a
problem: that was on purpose. `--json` gives the same verdict with every problem and every worker.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from . import as_json
from .dashboard import WorkerView, is_failing, printable
from .report import open_store
from .worker_views import StatusSnapshot, read_status
from ..errors import StoreUnavailable

HEALTHY, DEGRADED, DOWN = 0, 1, 2
VERDICTS = {HEALTHY: "healthy", DEGRADED: "degraded", DOWN: "down"}


@dataclass(frozen=True, slots=True)
class Problem:
    worker: str | None
    kind: str
    """broken, quarantined, failing, overdue; or supervisor, database (then `worker` is None)."""
    detail: str

    def line(self) -> str:
        return f"{self.kind}: " + (f"{printable(self.worker)}: " if self.worker else "") + printable(self.detail)


def worker_problems(view: WorkerView) -> list[Problem]:
    """What is wrong with one worker, as a monitor should hear it."""
    found = []
    if view.state == "broken":
        found.append(Problem(view.name, "broken", _first_line(view.last_error) or "its module or definition is broken"))
    if view.state == "quarantined":
        found.append(Problem(view.name, "quarantined", f"paused after {view.consecutive_failures} failures in a row; "
                             "`resume` it once fixed"))
    elif view.state != "broken" and view.consecutive_failures and is_failing(view):
        found.append(Problem(view.name, "failing", f"{view.consecutive_failures} failure(s) in a row, last "
                             f"{view.last_outcome}: {_first_line(view.last_error)}"))
    if view.overdue:
        found.append(Problem(view.name, "overdue", f"due at {as_json.moment(view.next_run_at)} and not started"))
    return found


def judge(snapshot: StatusSnapshot) -> tuple[int, list[Problem]]:
    problems = [problem for view in snapshot.rows for problem in worker_problems(view)]
    if snapshot.alive.alive is False:
        return DOWN, [Problem(None, "supervisor", snapshot.alive.line), *problems]
    if snapshot.alive.alive is None:
        problems.insert(0, Problem(None, "supervisor", snapshot.alive.line))
    return (DEGRADED if problems else HEALTHY), problems


def assess(read: Callable[[], StatusSnapshot]) -> tuple[int, list[Problem], StatusSnapshot | None]:
    """Judge what `read` returns: the verdict, its problems, and the snapshot (None: the database could not be
    read, which is down). `health` and the web page's /health both judge this way."""
    try:
        snapshot = read()
    except StoreUnavailable as exc:
        return DOWN, [Problem(None, "database", str(exc))], None
    code, problems = judge(snapshot)
    return code, problems, snapshot


def document(code: int, problems: list[Problem], snapshot: StatusSnapshot | None) -> dict[str, Any]:
    """`health --json`'s document (without the format key `as_json.dumps` adds): the verdict, the problems, and
    every worker when the record could be read."""
    found: dict[str, Any] = {
        "health": VERDICTS[code], "exit_code": code,
        "problems": [{"worker": p.worker, "kind": p.kind, "detail": p.detail} for p in problems],
    }
    if snapshot is not None:
        found.update(as_json.status(snapshot))
    return found


def cmd_health(url: str, statement_timeout_ms: int, json_output: bool) -> int:
    """Print the verdict (one line, then one per problem) or its JSON; return its exit status."""
    def read() -> StatusSnapshot:
        store = open_store(url, statement_timeout_ms, write=False)
        try:
            return read_status(store)
        finally:
            store.close()

    code, problems, snapshot = assess(read)
    if json_output:
        print(as_json.dumps(document(code, problems, snapshot)))
        return code
    workers = f"{len(snapshot.rows)} worker(s)" if snapshot is not None else "the record cannot be read"
    summary = snapshot.alive.line if snapshot is not None and snapshot.alive.alive else ""
    print(f"{VERDICTS[code]}: {workers}" + (f"; {summary}" if summary else "")
          + (f"; {len(problems)} problem(s)" if problems else ""))
    for problem in problems:
        print(f"  {problem.line()}")
    return code


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0][:200] if (text or "").strip() else ""

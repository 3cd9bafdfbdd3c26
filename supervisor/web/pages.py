"""The pages as HTML: pure functions from what reading.py read to markup (no clock, no I/O, no database).

Every value passes through markup.py's escaping; links are relative (`./worker/NAME`, `../failure/7`), so the
pages work behind a reverse proxy that serves them under a prefix of its own. Times are UTC in the markup, with
the viewer's zone put in by /static/app.js; without JavaScript everything is there, in UTC. Status, worker and
node pages reload themselves every REFRESH seconds (`<meta http-equiv="refresh">`, no script needed); a failure
never changes, so its page does not.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Sequence
from urllib.parse import quote

from .markup import UTC_FORMAT, Child, Html, escape, join, moment, tag, text_block
from .reading import RunView, StatusView, WorkerPage
from ..operate.dashboard import ACTIVE_STATES, NEAR_TIMEOUT, WorkerView, ago, count, is_failing, relevance, span, until
from ..operate.nodes import clock, lease_left, sqlite_line
from ..operate.report import ended_by, one_line
from ..record.nodes_view import Nodes
from ..record.ownership import Holder

REFRESH = 5
"""Seconds between a page's reloads."""
ROWS_SHOWN = 1000
"""Workers on the status page (the most relevant first); beyond it, a line says how many are left out."""
ERROR_WIDTH = 120
"""Characters of a last error or failure message shown in a table cell."""
OUTPUT_LIMIT = 8 * 1024
"""Characters of each stream shown per run on a worker's page (the end of it)."""
TAIL_LIMIT = 64 * 1024
"""Characters of a traceback, stack or captured stream shown on a failure's page (as much as a failure keeps)."""
RUN_ID_SHOWN = 8


def layout(title: str, body: Html, base: str, refresh: bool = True) -> Html:
    """A whole page: the head (styles and script from /static, same origin), the navigation, `body`, a footer."""
    head = join([
        Html('<meta charset="utf-8">'),
        tag("meta", http_equiv="refresh", content=str(REFRESH)) if refresh else Html(""),
        tag("meta", name="viewport", content="width=device-width, initial-scale=1"),
        tag("title", f"{title} · worker-supervisor"),
        tag("link", rel="stylesheet", href=f"{base}static/style.css"),
        tag("link", rel="icon", href=f"{base}static/icon.svg", type="image/svg+xml"),
        tag("script", src=f"{base}static/app.js", defer="defer"),
    ])
    nav = tag("nav", tag("a", "worker-supervisor", href=base, class_="home"), " ",
              tag("a", "status", href=base), " ", tag("a", "nodes", href=f"{base}nodes"), " ",
              tag("a", "health (JSON)", href=f"{base}health"))
    note = "read-only" + (f"; reloads every {REFRESH} s" if refresh else "")
    footer = tag("footer", note, "; ", tag("span", "times in UTC", id="zone"))
    return Html("<!DOCTYPE html>\n" + tag("html", tag("head", head), tag("body", nav, tag("main", body), footer),
                                          lang="en"))


def worker_href(base: str, name: str) -> str:
    return f"{base}worker/{quote(name, safe='')}"


def failure_href(base: str, failure_id: int) -> str:
    return f"{base}failure/{failure_id}"


def relative(value: datetime | None, text: str) -> Html:
    """An age or a countdown (`3s ago`, `in 4s`) that carries its moment: UTC on hover (the viewer's zone beside
    it once /static/app.js ran, which leaves the words of a `time.ago` as they are)."""
    if value is None:
        return escape(text)
    stamp = value.strftime(UTC_FORMAT)
    return tag("time", text, class_="ago", datetime=value.isoformat(timespec="seconds") + "Z", title=stamp)


def table(headers: Sequence[str], rows: Sequence[Sequence[Child]], row_classes: Sequence[str | None] | None = None,
          cell_classes: Sequence[str | None] | None = None) -> Html:
    """A table: a header row and the rows' cells (each escaped unless it is Html)."""
    head = tag("thead", tag("tr", join(tag("th", header) for header in headers)))
    body = []
    for index, row in enumerate(rows):
        cells = join(tag("td", cell, class_=cell_classes[i] if cell_classes else None) for i, cell in enumerate(row))
        body.append(tag("tr", cells, class_=row_classes[index] if row_classes else None))
    return tag("table", head, tag("tbody", join(body)))


def facts(pairs: Sequence[tuple[str, Child]]) -> Html:
    """A definition list of `name: value` pairs."""
    return tag("dl", join(join([tag("dt", name), tag("dd", value)]) for name, value in pairs), class_="facts")


# -- the status page --------------------------------------------------------------------------------------------


def status_page(view: StatusView, base: str = "./") -> Html:
    """Who runs the workers (one line), the workers (running, broken and failing first), and their counts."""
    snapshot = view.snapshot
    alive = snapshot.alive
    state = {True: "alive", False: "down", None: "unknown"}[alive.alive]
    rows = sorted(snapshot.rows, key=lambda row: relevance(row, snapshot.now))
    shown = rows[:ROWS_SHOWN]
    body = [tag("h1", "workers"), tag("p", alive.line, class_=f"liveness {state}"), _totals(snapshot.rows)]
    if not rows:
        body.append(tag("p", "no workers in the record yet (a supervisor that starts on this database adds them)"))
    else:
        body.append(_workers_table(shown, view.newest_failure, snapshot.now, base))
    if len(rows) > len(shown):
        body.append(tag("p", f"… and {len(rows) - len(shown)} more workers (the least relevant)", class_="cut"))
    return layout("status", join(body), base)


def _totals(rows: Sequence[WorkerView]) -> Html:
    running = sum(row.state in ACTIVE_STATES for row in rows)
    parts: list[Child] = [f"{len(rows)} worker(s)", f"{running} running"]
    for number, label in ((sum(is_failing(row) for row in rows), "failing"),
                          (sum(row.state == "broken" for row in rows), "broken"),
                          (sum(row.state in ("paused", "quarantined") for row in rows), "paused"),
                          (sum(row.overdue for row in rows), "overdue")):
        if number:
            parts.append(tag("span", f"{number} {label}", class_=f"trouble {label}"))
    return tag("p", join(parts, " · "), class_="totals")


def _workers_table(rows: Sequence[WorkerView], newest_failure: dict[str, int], now: datetime, base: str) -> Html:
    with_node = any(row.node for row in rows)
    with_schedule = any(row.schedule for row in rows)
    headers = ["worker", "state", *(["node"] if with_node else []), "pid", "duration", "outcome", "last run",
               "next run", *(["schedule"] if with_schedule else []), "ok", "failed", "last error"]
    cells: list[list[Child]] = []
    classes: list[str | None] = []
    for row in rows:
        line: list[Child] = [
            tag("a", row.name, href=worker_href(base, row.name)),
            tag("span", row.state, class_=f"state {row.state}"),
            *([row.node or ""] if with_node else []),
            str(row.pid) if row.pid else "",
            _duration(row, now),
            tag("span", row.last_outcome or "-", class_=f"outcome {row.last_outcome or 'none'}"),
            relative(row.last_run_at, ago(row.last_run_at, now)),
            _next_run(row, now),
            *([row.schedule or ""] if with_schedule else []),
            count(row.successes),
            _failed(row),
            _error(row, newest_failure.get(row.name), now, base),
        ]
        cells.append(line)
        trouble = "running" if row.state in ACTIVE_STATES else "broken" if row.state == "broken" else \
            "failing" if is_failing(row) else None
        classes.append(" ".join(filter(None, [trouble, "overdue" if row.overdue else None])) or None)
    return tag("div", table(headers, cells, classes), class_="scroll")


def _duration(row: WorkerView, now: datetime) -> Html:
    """The run in progress against its timeout (`12s/30s`, marked near and past it), else the last run's."""
    if row.state in ACTIVE_STATES and row.running_since is not None:
        elapsed = (now - row.running_since).total_seconds()
        if not row.timeout:
            return tag("span", span(elapsed), class_="running")
        share = elapsed / row.timeout
        mark = "over" if share >= 1 else "near" if share >= NEAR_TIMEOUT else "running"
        return tag("span", f"{span(elapsed)}/{span(row.timeout)}", class_=mark)
    return escape("-" if row.duration is None else span(row.duration))


def _next_run(row: WorkerView, now: datetime) -> Html:
    if row.overdue and row.next_run_at is not None:
        return tag("span", relative(row.next_run_at, f"overdue {span((now - row.next_run_at).total_seconds())}"),
                   class_="overdue")
    return relative(row.next_run_at, until(row.next_run_at, now))


def _failed(row: WorkerView) -> Html:
    text = count(row.failures)
    if row.consecutive_failures > 1:
        return tag("span", f"{text} ({count(row.consecutive_failures)} in a row)", class_="streak")
    return escape(text)


def _error(row: WorkerView, failure_id: int | None, now: datetime, base: str) -> Html:
    """The last error's first line: linked to the newest failure; dimmed with its age once the worker recovered."""
    if not row.last_error:
        return Html("")
    message = one_line(row.last_error, ERROR_WIDTH)
    text: Html = tag("a", message, href=failure_href(base, failure_id)) if failure_id is not None else escape(message)
    recovered = row.last_outcome == "succeeded" and row.consecutive_failures == 0 and row.state != "broken"
    if not recovered:
        return tag("span", text, class_="error")
    age = f"({ago(row.last_failure_at, now)}) " if row.last_failure_at is not None else ""
    return tag("span", age, text, class_="recovered")


# -- the nodes page ---------------------------------------------------------------------------------------------


def nodes_page(found: Nodes | Holder, base: str = "./") -> Html:
    """The supervisors on the database: the nodes on PostgreSQL; on SQLite one line, as `nodes` prints it."""
    if isinstance(found, Holder):
        return layout("nodes", join([tag("h1", "nodes"), tag("p", sqlite_line(found), class_="liveness")]), base)
    body = [tag("h1", "nodes"), tag("p", f"{len(found.alive)} alive", class_="liveness " + (
        "alive" if found.alive else "down"))]
    if not found.nodes:
        body.append(tag("p", "no nodes in the last 24 h (a supervisor on this database registers one)"))
    else:
        rows: list[list[Child]] = []
        for node in found.nodes:
            ended: Child = ""
            if node.state == "dead":
                ended = join([relative(node.ended_at, ago(node.ended_at, found.now)),
                              f" by {node.ended_by_name or node.ended_by or '?'}"])
            elif node.state == "stopped":
                ended = relative(node.ended_at, ago(node.ended_at, found.now))
            elif node.state == "expired":
                ended = join(["lease lapsed ", relative(node.lease_until, ago(node.lease_until, found.now))])
            rows.append([
                node.name, node.id[:8], f"{node.host}:{node.pid}", node.version,
                tag("span", node.state, class_=f"node {node.state}"), moment(node.started_at),
                relative(node.heartbeat_at, ago(node.heartbeat_at, found.now)),
                span(lease_left(node, found.now)) if node.alive else "-", clock(node.clock_offset),
                str(node.running) if node.alive else "-", str(len(node.workers)), ended,
            ])
        headers = ["name", "id", "host:pid", "version", "state", "started", "heartbeat", "lease", "clock", "runs",
                   "workers", "ended"]
        body.append(tag("div", table(headers, rows), class_="scroll"))
    if found.older:
        body.append(tag("p", f"{found.older} older node(s) not shown", class_="cut"))
    return layout("nodes", join(body), base)


# -- a worker's page --------------------------------------------------------------------------------------------


def worker_page(page: WorkerPage, base: str = "../") -> Html:
    """A worker: its row, its recent runs (with what each printed) and its recent failures."""
    row = page.worker
    state = row.status
    if state == "idle" and row.paused:
        state = "quarantined" if row.pause_reason else "paused"
    summary = facts([
        ("state", tag("span", state, class_=f"state {state}")),
        ("schedule", row.schedule or "-"),
        ("last outcome", tag("span", row.last_outcome or "-", class_=f"outcome {row.last_outcome or 'none'}")),
        ("last run", moment(row.last_run_at)),
        ("next run", moment(row.next_run_at)),
        ("runs", f"{row.success_count} succeeded, {row.failure_count} failed"
                 + (f" ({row.consecutive_failures} in a row)" if row.consecutive_failures else "")),
        *([("paused", row.pause_reason or "by an operator")] if row.paused else []),
        *([("last error", tag("span", one_line(row.last_error, ERROR_WIDTH * 2), class_="error"))]
          if row.last_error else []),
    ])
    body = [tag("h1", row.name), summary, tag("h2", "recent runs")]
    if page.runs:
        body.append(tag("p", f"the {len(page.runs)} newest, newest first", class_="cut"))
        body.append(tag("div", _runs_table(page.runs, base), class_="scroll"))
    else:
        body.append(tag("p", "no runs recorded"))
    body.append(tag("h2", "recent failures"))
    if page.failures:
        failures: list[list[Child]] = [[
            tag("a", str(f.id), href=failure_href(base, f.id)), moment(f.created_at),
            tag("span", f.kind, class_=f"outcome {f.kind}"), ended_by(f.exit_code, f.signal),
            one_line(f.message, ERROR_WIDTH)] for f in page.failures]
        body.append(tag("div", table(["id", "when", "kind", "ended by", "message"], failures), class_="scroll"))
    else:
        body.append(tag("p", "no failures recorded"))
    return layout(row.name, join(body), base)


def _runs_table(runs: Sequence[RunView], base: str) -> Html:
    rows: list[list[Child]] = []
    for view in runs:
        run = view.run
        outcome = run.outcome or ("running" if run.finished_at is None else "-")
        failure: Child = tag("a", f"failure {view.failure}", href=failure_href(base, view.failure)) \
            if view.failure is not None else ""
        rows.append([
            moment(run.started_at),
            tag("span", outcome, class_=f"outcome {outcome}"),
            "-" if run.duration is None else span(run.duration),
            ended_by(run.exit_code, run.signal),
            run.node or "-",
            str(run.pid) if run.pid else "-",
            str(run.attempt),
            tag("span", run.id[:RUN_ID_SHOWN], title=run.id, class_="run-id"),
            join([failure, " ", _output(view)]) if failure else _output(view),
        ])
    return table(["started", "outcome", "duration", "ended by", "node", "pid", "attempt", "run", "output"], rows)


def _output(view: RunView) -> Html:
    """What the run printed, folded away (a <details>, which needs no script to open)."""
    if not (view.stdout.strip() or view.stderr.strip()):
        return tag("span", "nothing kept", class_="none")
    parts = []
    for name, text in (("stdout", view.stdout), ("stderr", view.stderr)):
        if text.strip():
            parts.append(join([tag("h3", name), text_block(text, OUTPUT_LIMIT)]))
    lines = view.stdout.count("\n") + view.stderr.count("\n")
    return tag("details", tag("summary", f"output ({lines} line(s))"), join(parts))


# -- a failure's page -------------------------------------------------------------------------------------------

STACK_STARTS = ("Fatal Python error", "Current thread 0x", "Thread 0x", "Stack (most recent call first)")
STACK_LINES = ("  File ", "  <no Python frame>", "  Garbage-collecting", "Current thread 0x", "Thread 0x",
               "Stack (most recent call first)", "Python runtime state", "Fatal Python error")


def fault_stack(stderr: str) -> str | None:
    """The Python stack faulthandler wrote to stderr (at a crash, or when a hung run was stopped), or None.

    From its first line ("Fatal Python error: …", "Current thread 0x…") through its frames, up to the first line
    that is none of its own ("Extension modules: …", or what the worker printed next).
    """
    lines = stderr.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(STACK_STARTS)), None)
    if start is None:
        return None
    end = start
    for index in range(start, len(lines)):
        line = lines[index]
        if line.startswith(STACK_LINES) or not line.strip():
            end = index
        else:
            break
    return "\n".join(lines[start:end + 1]).strip() or None


def failure_page(row: Any, base: str = "../") -> Html:
    """One failure in full: who, when, how it ended, the message, the traceback, faulthandler's stack, and the
    tails of stderr and stdout (as `failures --id` shows it). `row` is a FailureRow."""
    worker = str(row.worker_id)
    run = row.run_id
    info = facts([
        ("worker", tag("a", worker, href=worker_href(base, worker))),
        ("run", run if run is not None else "- (no run: the module or definition is broken)"),
        ("when", moment(row.created_at)),
        ("kind", tag("span", row.kind, class_=f"outcome {row.kind}")),
        ("ended by", tag("span", ended_by(row.exit_code, row.signal), class_="ended-by")),
    ])
    body = [tag("h1", f"failure {row.id}: {worker}"), info, tag("h2", "message"), text_block(row.message, TAIL_LIMIT)]
    if row.traceback.strip():
        body += [tag("h2", "traceback"), text_block(row.traceback, TAIL_LIMIT)]
    stack = fault_stack(row.stderr_tail)
    if stack is not None:
        title = "stack when it was stopped (faulthandler)" if row.kind == "timeout" else "stack (faulthandler)"
        body += [tag("h2", title), text_block(stack, TAIL_LIMIT)]
    for title, text in (("stderr (tail)", row.stderr_tail), ("stdout (tail)", row.stdout_tail)):
        body.append(tag("h2", title))
        body.append(text_block(text, TAIL_LIMIT) if text.strip() else tag("p", "nothing captured", class_="none"))
    return layout(f"failure {row.id}", join(body), base, refresh=False)


# -- answers that are not a record -------------------------------------------------------------------------------


def message_page(title: str, line: str, base: str, css: str, refresh: bool = False) -> Html:
    """A page that says one thing in one line: not found, not allowed, the database unreachable."""
    return layout(title, join([tag("h1", title), tag("p", line, class_=css)]), base, refresh=refresh)

"""The coordinator: a helper process that speaks for this supervisor to the other nodes on a shared PostgreSQL.

It holds the node's lease (a heartbeat when the supervisor asks for one, so a frozen supervisor loses its lease),
claims slots for the supervisor (record/cluster.py), declares dead the peers whose lease ran out, and closes the
ticks of runs that ended. Like the recorder, it keeps the database client out of the supervisor's process: a
database that hangs holds up only this process, and the supervisor's fencing (supervise/cluster.py, spawn/fence.py)
does not depend on it answering.

Protocol (see protocol.py):
  supervisor -> coordinator: heartbeat {node, name, running, workers}; claim {run, worker, slot_at, period, overlap,
                             scheduled}; done {ticks}; give_back {node, runs}; stop {node}
  coordinator -> supervisor: renewed {node, since, members, offset}; dead {node, by, at}; declared {name, where,
                             runs}; claim {run, result, tick, skipped, taken_at, last_at}; unavailable {error}; stopped {}
"""
from __future__ import annotations

import os
import socket
import time
from datetime import datetime, timezone
from typing import Any, Callable, NoReturn

import peewee

from .cluster import ClaimRequest, NodeLedger
from ..errors import StoreUnavailable
from ..helper_main import become_helper, helper_arguments
from ..process import boottime
from ..protocol import COORDINATOR_DB_ENV, Message, receive, send
from .store import Store

PRUNE_INTERVAL = 600.0
TICKS_KEPT_HOURS = 24.0
"""The ledger keeps a day of claims (and each worker's last one for good): enough to see what ran where."""



class Coordinator:
    """Answer the supervisor's requests in order, one short transaction each."""

    def __init__(self, control: socket.socket, store: Store, lease: float, grace: float, margin: float) -> None:
        self.control = control
        self.store = store
        self.ledger = NodeLedger(store)
        self.lease = lease
        self.grace = grace
        self.margin = margin
        self.offset: float | None = None
        self.next_prune = time.monotonic() + PRUNE_INTERVAL
        self.seen: list[str] | None = None
        """The live nodes read at our last heartbeat."""
        """How far our clock is ahead of the database's, from the last heartbeat (negative: behind)."""
        self.failing: str | None = None

    def serve(self) -> None:
        """Work until the supervisor closes the channel: what waits is taken together, the lease first."""
        while True:
            waiting = self.take_waiting()
            if waiting is None:
                return
            # A heartbeat never waits behind a burst of claims (50 triggers, a thousand workers due at once): the
            # lease is what keeps our runs alive. Of several, the latest says the most.
            heartbeats = [m for m in waiting if m["op"] == "heartbeat"]
            claims = [m for m in waiting if m["op"] == "claim"]
            others = [m for m in waiting if m["op"] not in ("heartbeat", "claim")]
            for message in heartbeats[-1:] + [m for m in others if m["op"] == "done"]:
                self.attempt(self.handle, message)
            if claims:  # all that wait, in one statement: ten workers due at once cost one round trip, not ten
                self.attempt(self.claim, claims)
            for message in [m for m in others if m["op"] != "done"]:
                self.attempt(self.handle, message)

    def attempt(self, work: Callable[[Any], None], what: Any) -> None:
        """Do one piece of work; a database error is answered as such (unavailable), never raised."""
        try:
            work(what)
        except peewee.PeeweeException as exc:
            for message in what if isinstance(what, list) else [what]:
                self.unavailable(exc, message)
            return
        self.healthy()

    def claim(self, messages: list[Message]) -> None:
        requests = [
            ClaimRequest(m["worker"], _naive(m["slot_at"]), m.get("period"), m["overlap"], m["run"],
                         bool(m.get("scheduled", True)), m.get("command"))
            for m in messages
        ]
        for message, claim in zip(messages, self.ledger.claim_many(messages[0]["node"], self.margin, requests)):
            send(self.control, "claim", run=message["run"], result=claim.result, tick=claim.tick,
                 skipped=claim.skipped, taken_at=claim.taken_at, last_at=claim.last_at)

    def take_waiting(self) -> list[Message] | None:
        """Every message waiting (at least one, blocking for it); None once the supervisor is gone."""
        found: list[Message] = []
        block = True
        while True:
            try:
                message, fds = receive(self.control, block=block)
            except BlockingIOError:
                return found
            for fd in fds:
                os.close(fd)
            if message is None:
                return found or None
            found.append(message)
            block = False

    def handle(self, message: Message) -> None:
        op = message["op"]
        if op == "heartbeat":
            self.heartbeat(message)
        elif op == "done":
            self.ledger.ticks_done([int(t) for t in message["ticks"]])
        elif op == "give_back":
            self.ledger.give_back(message["node"], [str(run) for run in message["runs"]])
        elif op == "stop":
            self.ledger.stop(message["node"])
            send(self.control, "stopped")

    def heartbeat(self, message: Message) -> None:
        """Renew the lease (registering the node the first time), report the live nodes, declare the dead."""
        node, workers = message["node"], list(message["workers"])
        since = boottime()  # before the statement: the lease is counted from no later than the database's now
        before = time.time()
        unclaimed = [(str(run), str(worker)) for run, worker in message.get("unclaimed", [])]
        renewed = self.ledger.heartbeat(node, self.lease, int(message["running"]), workers, self.offset,
                                        list(message.get("runs", [])), self.seen, unclaimed)
        if renewed is None:
            declared = self.ledger.declared_by(node)
            if declared is not None:
                send(self.control, "dead", node=node, by=declared[0], at=declared[1])
                return
            renewed = self.ledger.register(node, message["name"], self.lease, workers, int(message["pid"]))
        after = time.time()
        self.offset = (before + after) / 2 - renewed.replace(tzinfo=timezone.utc).timestamp()
        members = self.ledger.members()
        self.seen = [m.id for m in members]  # written at the next heartbeat: only then are they acknowledged
        send(self.control, "renewed", node=node, since=since, offset=self.offset,
             members=[[m.id, m.name, sorted(m.workers)] for m in members], slots=self.ledger.last_slots(workers),
             ticks=self.ledger.ticks_of([run for run, _ in unclaimed]), paused=self.ledger.paused(workers))
        if time.monotonic() >= self.next_prune:
            self.next_prune = time.monotonic() + PRUNE_INTERVAL
            self.ledger.prune_ticks(TICKS_KEPT_HOURS)
        for name, where, lost in self.ledger.declare_dead(node, self.grace):
            send(self.control, "declared", name=name, where=where, runs=[[r.run, r.worker] for r in lost])

    def unavailable(self, exc: peewee.PeeweeException, message: Message) -> None:
        """The database failed us: answer the request so (the supervisor says it once per outage), and reconnect
        at the next one."""
        error = self.store.describe(exc)
        self.store.reconnect()
        if message["op"] == "claim":
            send(self.control, "claim", run=message["run"], result="unavailable", tick=None, skipped=0, taken_at=None,
                 last_at=None)
        elif message["op"] == "heartbeat":
            send(self.control, "unavailable", error=error)
        self.failing = error

    def healthy(self) -> None:
        if self.failing is not None:
            self.failing = None
            send(self.control, "healthy")


def _naive(unix: float) -> datetime:
    """A Unix time as the naive-UTC datetime the tables hold (to the microsecond, as PostgreSQL keeps it)."""
    return datetime.fromtimestamp(round(unix, 6), timezone.utc).replace(tzinfo=None)


def main(argv: list[str] | None = None) -> NoReturn:
    """Entry point of `python -m supervisor.record.coordinator`; only the supervisor starts it."""
    parser = helper_arguments("supervisor.record.coordinator")
    parser.add_argument("--lease", type=float, required=True)
    parser.add_argument("--grace", type=float, required=True)
    parser.add_argument("--margin", type=float, required=True)
    parser.add_argument("--statement-timeout-ms", type=int, required=True)
    args = parser.parse_args(argv)
    # Dying with the supervisor leaves nothing to clean up: what is committed stays; a lease not renewed runs out,
    # which is the point.
    control = become_helper(args, "coordinator")
    url = os.environ.pop(COORDINATOR_DB_ENV)
    store = Store(url, connect_timeout=2, statement_timeout_ms=args.statement_timeout_ms)
    try:
        store.open()
    except StoreUnavailable:
        pass  # each request tries again, and answers `unavailable` meanwhile
    coordinator = Coordinator(control, store, args.lease, args.grace, args.margin)
    try:
        coordinator.serve()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the supervisor is gone
    store.close()
    os._exit(0)


if __name__ == "__main__":
    main()


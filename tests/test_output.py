"""What a run that did not fail printed is kept (its worker's keep_output, from the end), shown by `history --run`,
and pruned with its run; a failed run keeps its tails in its failure as before."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from helpers import Record, wait_until, worker_package

CHATTY = '''
import sys
from supervisor import worker


@worker(interval=0.3)
def nightly(ctx):
    print("begin of a long report")
    print("x" * 5000)
    print("rows exported:", 1234)
    print("a warning on stderr", file=sys.stderr)
    ctx.log.info("through ctx.log")


@worker(interval=0.3, keep_output=0)
def quiet_please(ctx):
    print("not kept")
'''


def cli(db: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "supervisor", *args, "--db", f"sqlite:///{db}"], cwd=cwd,
                          capture_output=True, text=True, timeout=60, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})


def test_a_successful_runs_output_is_kept_shown_and_pruned_with_it(tmp_path: Path, db: Path, record: Record,
                                                                 start_supervisor: Any) -> None:
    worker_package(tmp_path, [], extra={"chatty": CHATTY})
    supervisor = start_supervisor()
    wait_until(lambda: len(record.runs("nightly")) >= 3 and len(record.runs("quiet_please")) >= 1, timeout=60,
               what="runs of both")
    assert supervisor.stop() == 0
    run = record.runs("nightly")[0]
    assert run["outcome"] == "succeeded"
    shown = cli(db, tmp_path, "history", "nightly", "--run", run["id"][:8])
    assert shown.returncode == 0, shown.stderr
    # The end of stdout within the default 4 KiB: the last lines, not the first.
    assert "rows exported: 1234" in shown.stdout and "begin of a long report" not in shown.stdout
    assert "a warning on stderr" in shown.stdout and "through ctx.log" in shown.stdout
    assert "succeeded" in shown.stdout
    document = json.loads(cli(db, tmp_path, "history", "nightly", "--run", run["id"], "--json").stdout)["run"]
    assert document["id"] == run["id"] and document["stdout_tail"].endswith("rows exported: 1234\n")
    assert len(document["stdout_tail"].encode()) <= 4096
    # keep_output = 0 keeps nothing.
    quiet = record.runs("quiet_please")[0]
    assert "(nothing kept)" in cli(db, tmp_path, "history", "quiet_please", "--run", quiet["id"][:8]).stdout
    # An id that matches nothing is one line and a non-zero exit.
    missing = cli(db, tmp_path, "history", "nightly", "--run", "zzzz")
    assert missing.returncode == 1 and len(missing.stderr.strip().splitlines()) == 1, missing.stderr
    # Pruned with its run.
    before = record.query("select count(*) as n from output")[0]["n"]
    assert before >= 3
    pruned = cli(db, tmp_path, "prune", "--keep-runs", "1")
    assert pruned.returncode == 0, pruned.stderr
    kept_runs = record.query("select count(*) as n from run")[0]["n"]
    assert record.query("select count(*) as n from output")[0]["n"] <= kept_runs
    assert record.query("select count(*) as n from output where run_id not in (select id from run)")[0]["n"] == 0

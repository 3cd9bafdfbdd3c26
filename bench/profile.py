"""Profile the supervisor's processes under one of the benchmark's workloads, with py-spy.

    bench/.venv/bin/python bench/profile.py latency --workers 1000 --seconds 15
    bench/.venv/bin/python bench/profile.py busy --seconds 10 --role supervisor,spawner,recorder
    bench/.venv/bin/python bench/profile.py crash --seconds 10

Starts a real `python -m supervisor run` on a scratch SQLite file with bench/benchworkers, samples the chosen
processes with `py-spy record --format raw` (collapsed stacks; `--idle` keeps the samples where a process
waits, so the share of time spent working is visible) and prints, per process, the functions with the most
samples (own and inclusive). The collapsed stacks stay in bench/out/ for a flame graph
(e.g. https://www.speedscope.app takes them as they are).
"""
from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from run import OUT, PY, Reader, Supervised, bench_env

SCENARIOS = {
    # name: (BENCH_SCENARIO, active workers, interval)
    "latency": ("latency", 1, 0.05),
    "crash": ("crash", 1, 0.1),
    "busy": ("busy", os.cpu_count() or 1, 0.001),
    "idle": ("idle", 0, 1.0),
    "every10": ("idle", 200, 10.0),
}


def summarize(path: Path, top: int) -> str:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        own[frames[-1]] += count
        for frame in set(frames[1:]):  # frames[0] is the process/thread header
            inclusive[frame] += count
    waiting = sum(n for frame, n in own.items() if frame.startswith(("EpollSelector.select", "select (")))
    busy = max(1, total - waiting)
    lines = [f"{path.name}: {total} samples, {busy} of them busy (not waiting in select); shares of the busy ones"]
    lines.append("  own (where the samples were taken):")
    lines += [f"    {100 * n / busy:5.1f}%  {frame}" for frame, n in own.most_common(top + 1)
              if not frame.startswith(("EpollSelector.select", "select ("))][:top]
    lines.append("  inclusive (on the stack):")
    lines += [f"    {100 * n / busy:5.1f}%  {frame}" for frame, n in inclusive.most_common(top + 8)
              if n < total * 0.97 and not frame.startswith(("EpollSelector.select", "select ("))][:top]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--workers", type=int, default=10, help="registered workers (the rest are idle)")
    parser.add_argument("--module", default="lean", choices=("lean", "heavy"))
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--role", default="supervisor", help="comma-separated: supervisor, spawner, recorder")
    parser.add_argument("--rate", type=int, default=1000, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--idle", action="store_true", help="keep idle samples (waiting in select)")
    args = parser.parse_args()
    kind, active, interval = SCENARIOS[args.scenario]
    workers = max(args.workers, active)
    OUT.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="profile-", dir=OUT))
    out = work / "runs.txt"
    db = f"sqlite:///{work / 'bench.db'}"
    env = bench_env(out=out, scenario=kind, workers=workers, active=active, interval=interval)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    with Supervised("supervisor", db, f"benchworkers.{args.module}", env, work) as s:
        reader = Reader(db)
        s.wait_workers(workers, reader)
        reader.close()
        time.sleep(1.0)
        targets = {"supervisor": s.process, "spawner": s.spawner, "recorder": s.recorder}
        spies = []
        for role in args.role.split(","):
            path = OUT / f"profile-{stamp}-{args.scenario}-{role}.txt"
            argv = [str(Path(PY).parent / "py-spy"), "record", "--pid", str(targets[role].pid), "--duration",
                    str(int(args.seconds)), "--rate", str(args.rate), "--format", "raw", "--output", str(path),
                    "--nonblocking"]
            if args.idle:
                argv.append("--idle")
            spies.append((path, subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)))
        for path, spy in spies:
            _, err = spy.communicate()
            if spy.returncode != 0:
                print(err.decode(errors="replace"), file=sys.stderr)
                return 1
    for path, _ in spies:
        print(summarize(path, args.top))
        print()
    if out.exists() and kind == "latency":
        late = sorted(float(line.split()[1]) * 1e3 for line in out.read_text().splitlines()[10:])
        if late:
            print(f"start latency while profiled: p50 {late[len(late) // 2]:.2f} ms, max {late[-1]:.2f} ms "
                  f"({len(late)} runs; py-spy's sampling slows the process it samples)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`worker-supervisor web` (issue 17), route by route: the real command serving a real record on SQLite and on
PostgreSQL, asked over real HTTP.

The record is filled by applying records through a Store, as the recorder does (a crash with faulthandler's stack
and a worker's HTML in its stderr, a timeout with the stack of the hung run, a success with output kept, a
broken module), or by a real supervisor where liveness and nodes are the point. The pages' pure parts (the
faulthandler stack, escaping) are tested as functions at the end.
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Iterator

import pytest

from dbtools import database_name, is_postgres, query, sqlite_path
from helpers import SupervisorProcess, TcpProxy, wait_until, worker_package
from supervisor.outcome import Outcome, Verdict
from supervisor.record import records
from supervisor.record.records import Record
from supervisor.record.store import utcnow
from supervisor.web.markup import Html, escape, tag, text_block
from supervisor.web.pages import fault_stack
from supervisor.worker import WorkerDefinition
from recordtools import apply_records, failure_id
from webtools import WebProcess

NODE = "web-test-node"
OTHER = "other-node"
XSS = "<img src=x onerror=alert(1)>"
TRACEBACK = ('Traceback (most recent call last):\n  File "/srv/jobs/heartbeat.py", line 12, in run\n    check_disk()\n'
             "ValueError: disk <b>/dev/sda1</b> is 97% full\n")
CRASH_STDERR = (f"parsing feed {XSS}\n\x1b[2Jcleared\nFatal Python error: Segmentation fault\n\n"
                "Current thread 0x00007f00 (most recent call first):\n"
                '  File "/usr/lib/python3.11/ctypes/__init__.py", line 519 in string_at\n'
                '  File "/srv/jobs/feed.py", line 7 in parse_with_buggy_extension\n\n'
                "Extension modules: psycopg_binary (total: 1)\n")
HUNG_STDERR = ('waiting for the upstream\nCurrent thread 0x00007f01 (most recent call first):\n'
               '  File "/srv/jobs/upstream.py", line 30 in wait_for_reply\n  File "/srv/jobs/upstream.py", line 9 in run\n')
SECURITY = {
    "content-security-policy": "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; "
                               "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


def definition(name: str, timeout: float = 30.0) -> WorkerDefinition:
    return WorkerDefinition(name=name, module=f"workers.{name}", interval=3600.0, timeout=timeout, grace=5.0)


def whole_run(run: str, worker: str, at: datetime, verdict: Verdict, pid: int, node: str = NODE,
              **end: object) -> list[Record]:
    """The records of one run, start to end, as the supervisor writes them."""
    return [
        records.run_started(run, worker, 1, at, at + timedelta(hours=1), node, 4000),
        records.run_spawned(run, worker, pid),
        records.run_finished(run, worker, 1, at, at + timedelta(seconds=1.5), 1.5, verdict, node, 4000, pid=pid,
                             **end),  # type: ignore[arg-type]  # the end's optional fields, by name
    ]


def fill(url: str) -> None:
    """A record of every page's material: runs ending every way, output kept, a broken module."""
    t0 = utcnow() - timedelta(minutes=10)
    batch: list[Record] = [records.workers_synced([definition("heartbeat"), definition("feed"),
                                                   definition("upstream", timeout=2.0), definition("cleanup")], [], t0)]
    batch += whole_run("run0error", "heartbeat", t0, Verdict(Outcome.ERROR, "ValueError: disk <b>/dev/sda1</b> is "
                       "97% full", TRACEBACK), 101, exit_code=1, stderr="warning: low disk\n", stdout="checked 2 disks\n")
    batch += whole_run("run1ok", "heartbeat", t0 + timedelta(minutes=1), Verdict(Outcome.SUCCEEDED, ""), 102,
                       exit_code=0, stdout=f"checked 3 disks {XSS}\n", stderr="a warning on stderr\n")
    batch += whole_run("run2crash", "feed", t0 + timedelta(minutes=2), Verdict(Outcome.CRASH, "crashed with SIGSEGV"),
                       103, signal=11, stderr=CRASH_STDERR, stdout="partial output\n")
    batch += whole_run("run3timeout", "upstream", t0 + timedelta(minutes=3),
                       Verdict(Outcome.TIMEOUT, "stopped after its timeout of 2s"), 104, signal=15, stderr=HUNG_STDERR)
    # cleanup runs on another node: SQLite shows the node column only when its runs came from more than one.
    batch += whole_run("run4exit", "cleanup", t0 + timedelta(minutes=4),
                       Verdict(Outcome.EXIT, "exited with status 3 without a result"), 105, node=OTHER, exit_code=3)
    batch.append(records.run_started("run5live", "cleanup", 1, utcnow(), None, OTHER, 4000))
    batch.append(records.broken("workers.bad", "workers.bad", "import failed: RuntimeError: no config", t0,
                                traceback="Traceback (most recent call last):\nRuntimeError: no config\n"))
    apply_records(url, batch)


@pytest.fixture
def filled(store_url: str) -> str:
    fill(store_url)
    return store_url


@pytest.fixture
def web(tmp_path: Path, filled: str) -> Iterator[WebProcess]:
    server = WebProcess(tmp_path, filled)
    try:
        yield server
    finally:
        assert server.stop() == 0, server.log()
    assert "Traceback" not in server.log(), server.log()


def assert_secure(answer: object) -> None:
    headers = getattr(answer, "headers")
    for name, value in SECURITY.items():
        assert headers.get(name) == value, (name, headers)


def visible(html: str) -> str:
    """The page's text as a reader sees it: tags dropped, entities decoded."""
    import html as html_module

    return html_module.unescape(re.sub(r"<[^>]+>", "", html))


# -- the pages ---------------------------------------------------------------------------------------------------


def test_the_status_page_lists_every_worker_trouble_first(web: WebProcess) -> None:
    answer = web.get("/")
    assert answer.status == 200 and answer.headers["content-type"] == "text/html; charset=utf-8"
    assert_secure(answer)
    assert answer.headers["cache-control"] == "no-store"
    page = answer.text
    assert '<meta http-equiv="refresh" content="5">' in page
    assert '<script src="./static/app.js" defer="defer"></script>' in page and "<script>" not in page
    # No supervisor holds this record: said in one plain line.
    assert re.search(r'<p class="liveness down">no supervisor is (running|alive \(none has run on this database '
                     r'yet\))</p>', page), page
    rows = re.findall(r'<tr( class="[^"]*")?><td><a href="\./worker/([^"]+)">', page)
    names = [name for _, name in rows]
    # Running first, then broken, then failing, then the rest.
    assert names == ["cleanup", "workers.bad", "feed", "upstream", "heartbeat"], names
    assert [classes for classes, _ in rows] == [' class="running"', ' class="broken"', ' class="failing"',
                                                 ' class="failing"', ""], rows
    # heartbeat recovered: its last error stays, dimmed, with its age.
    assert re.search(r'<span class="recovered">\(\d+m ago\) <a href="\./failure/\d+">ValueError: disk '
                     r'&lt;b&gt;/dev/sda1&lt;/b&gt; is 97% full</a></span>', page), page
    assert '<span class="outcome crash">crash</span>' in page and '<span class="outcome timeout">timeout</span>' in page
    # The node column, the last error linked to the failure, times as <time> in UTC with UTC on hover.
    assert "<th>node</th>" in page and f"<td>{NODE}</td>" in page and f"<td>{OTHER}</td>" in page
    assert f'href="./failure/{failure_id(web_url(web), "feed")}">crashed with SIGSEGV</a>' in page
    assert re.search(r'<time class="ago" datetime="\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ" title="\d{4}-\d\d-\d\d '
                     r'\d\d:\d\d:\d\d UTC">[^<]+ ago</time>', page), page
    assert "5 worker(s)" in visible(page)


def web_url(web: WebProcess) -> str:
    """The database URL the web process was started with (from its command line)."""
    argv = web.process.args
    assert isinstance(argv, list)
    return str(argv[argv.index("--db") + 1])


def test_a_workers_page_has_its_runs_with_their_output(web: WebProcess) -> None:
    answer = web.get("/worker/heartbeat")
    assert answer.status == 200
    assert_secure(answer)
    page = answer.text
    assert "<h1>heartbeat</h1>" in page and '<script src="../static/app.js"' in page
    text = visible(page)
    # Newest first: the success with its output kept, then the error (exit 1, linked to its failure).
    ok_at, error_at = text.index("succeeded"), text.index("error")
    assert ok_at < error_at
    assert f'href="../failure/{failure_id(web_url(web), "heartbeat")}">failure' in page
    assert "exit 1" in text and "exit 0" in text and NODE in text and "run1ok" in text
    assert "<details><summary>output" in page and "checked 3 disks" in text and "a warning on stderr" in text
    assert XSS not in page and "checked 3 disks &lt;img src=x onerror=alert(1)&gt;" in page
    assert "ValueError: disk &lt;b&gt;/dev/sda1&lt;/b&gt; is 97% full" in page  # the failures list, escaped


def test_a_crash_shows_the_signal_and_faulthandlers_stack_escaped(web: WebProcess) -> None:
    answer = web.get(f"/failure/{failure_id(web_url(web), 'feed')}")
    assert answer.status == 200
    assert_secure(answer)
    page = answer.text
    assert "http-equiv" not in page  # a failure never changes: no reload
    text = visible(page)
    assert "SIGSEGV" in text and "crashed with SIGSEGV" in text
    stack = page.split("<h2>stack (faulthandler)</h2>")[1].split("</pre>")[0]
    assert "Fatal Python error: Segmentation fault" in stack and "line 7 in parse_with_buggy_extension" in stack
    assert "Extension modules" not in stack and "parsing feed" not in stack
    # The worker's HTML is text, an escape sequence is defused, and both tails are there.
    assert XSS not in page and "parsing feed &lt;img src=x onerror=alert(1)&gt;" in page
    assert "\x1b" not in page and "·[2Jcleared" in page
    assert "<h2>stderr (tail)</h2>" in page and "partial output" in page


def test_a_timeout_shows_the_stack_of_the_hung_run_and_an_error_its_traceback(web: WebProcess) -> None:
    url = web_url(web)
    page = web.get(f"/failure/{failure_id(url, 'upstream')}").text
    stack = page.split("<h2>stack when it was stopped (faulthandler)</h2>")[1].split("</pre>")[0]
    assert "line 30 in wait_for_reply" in stack and "waiting for the upstream" not in stack
    assert "SIGTERM" in visible(page)
    error = web.get(f"/failure/{failure_id(url, 'heartbeat')}").text
    assert "<h2>traceback</h2>" in error and "check_disk()" in error and "exit 1" in visible(error)
    assert "&lt;b&gt;/dev/sda1&lt;/b&gt;" in error and "<b>" not in error
    broken = web.get(f"/failure/{failure_id(url, 'workers.bad')}").text
    assert "no run: the module or definition is broken" in visible(broken)


def test_nodes_and_health_say_what_the_commands_say(web: WebProcess) -> None:
    url = web_url(web)
    nodes = web.get("/nodes")
    assert nodes.status == 200
    assert_secure(nodes)
    if is_postgres(url):
        assert "no nodes in the last 24 h" in visible(nodes.text)
    else:
        assert "SQLite runs one supervisor (nodes need PostgreSQL): none is running" in visible(nodes.text)
    health = web.get("/health")
    assert_secure(health)
    assert health.headers["content-type"] == "application/json"
    document = json.loads(health.body)
    # No supervisor alive: down, 503, as `health` says it with exit status 2.
    assert health.status == 503 and document["health"] == "down" and document["exit_code"] == 2
    command = subprocess.run([sys.executable, "-m", "supervisor", "health", "--json", "--db", url],
                             capture_output=True, text=True, timeout=60)
    said = json.loads(command.stdout)
    assert command.returncode == 2 and said["problems"] == document["problems"]
    assert [w["name"] for w in said["workers"]] == [w["name"] for w in document["workers"]]


def test_static_files_are_served_with_their_types(web: WebProcess) -> None:
    script = web.get("/static/app.js")
    assert script.status == 200 and script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert b"time[datetime]" in script.body
    assert_secure(script)
    style = web.get("/static/style.css")
    assert style.status == 200 and style.headers["content-type"] == "text/css; charset=utf-8"
    assert web.get("/static/../app.py").status == 404


# -- read-only, unknown things, HEAD -----------------------------------------------------------------------------


def test_only_get_and_head_are_allowed(web: WebProcess) -> None:
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
        for path in ("/", "/worker/heartbeat", "/health"):
            answer = web.request(path, method, body=b"pause=heartbeat")
            assert answer.status == 405, (method, path, answer.status)
            assert answer.headers["allow"] == "GET, HEAD"
            assert_secure(answer)
    assert query(web_url(web), "select count(*) as n from command")[0]["n"] == 0


def test_unknown_workers_failures_and_paths_are_404(web: WebProcess) -> None:
    for path in ("/worker/nobody", "/worker/heartbeat/extra", "/failure/999999", "/failure/abc", "/failure/0",
                 "/failure/99999999999999999999", "/nowhere", "/worker/", "/static/nothing.js"):
        answer = web.get(path)
        assert answer.status == 404, (path, answer.status)
        assert_secure(answer)
    page = web.get(f"/worker/{XSS.replace(' ', '%20')}").text
    assert XSS not in page and "&lt;img" in page


def test_head_answers_the_headers_of_get_without_a_body(web: WebProcess) -> None:
    for path in ("/", "/worker/heartbeat", "/nodes", "/health", "/static/style.css", "/nowhere"):
        got, head = web.get(path), web.request(path, "HEAD")
        assert head.status == got.status and head.body == b"", path
        assert head.headers["content-type"] == got.headers["content-type"]
        assert int(head.headers["content-length"]) > 0
        assert_secure(head)


def test_requests_are_bounded_in_size_time_and_number(tmp_path: Path) -> None:
    web = WebProcess(tmp_path, f"sqlite:///{tmp_path}/none.db")  # no record: these answers need none
    try:
        with socket.create_connection(("127.0.0.1", web.port), timeout=30) as sock:
            sock.sendall(b"GET /" + b"a" * 9000 + b" HTTP/1.0\r\n\r\n")
            answer = sock.makefile("rb").read()
        assert answer.startswith(b"HTTP/1.0 414"), answer[:100]
        assert b"Content-Security-Policy: default-src 'none'" in answer
        # Sixteen clients that send nothing hold every slot: one more is answered 503 at once, not queued.
        silent = [socket.create_connection(("127.0.0.1", web.port), timeout=30) for _ in range(16)]
        try:
            busy = web.get("/health")
            assert busy.status == 503 and busy.body == b"too many requests at once; try again\r\n"
            assert busy.headers["retry-after"] == "1"
            for sock in silent[1:]:
                sock.close()
            # Their threads see the end of the connection and free their slots; the one left is dropped by the
            # server after the request timeout (10 s), not by us.
            wait_until(lambda: web.get("/health").status != 503 or web.get("/health").body.startswith(b"{"),
                       timeout=30, what="the slots freed")
            assert silent[0].recv(1) == b""
        finally:
            for sock in silent:
                sock.close()
    finally:
        assert web.stop() == 0
    assert "Traceback" not in web.log(), web.log()


# -- the database away, and back ---------------------------------------------------------------------------------


def test_an_unreachable_database_is_one_line_and_503_then_it_recovers(tmp_path: Path, filled: str) -> None:
    if is_postgres(filled):
        proxy = TcpProxy(5432)
        url = f"postgresql://postgres@127.0.0.1:{proxy.port}/{database_name(filled)}"

        def away() -> None:
            proxy.set("cut")

        def back() -> None:
            proxy.set("forward")
    else:
        path = Path(sqlite_path(filled))
        url = filled

        def away() -> None:
            path.rename(path.with_suffix(".away"))

        def back() -> None:
            path.with_suffix(".away").rename(path)
    crash = failure_id(filled, "feed")
    web = WebProcess(tmp_path, url)
    try:
        assert web.get("/").status == 200
        away()
        for page in ("/", "/worker/heartbeat", "/nodes", f"/failure/{crash}"):
            answer = web.get(page)
            assert answer.status == 503, (page, answer.status)
            assert_secure(answer)
            assert answer.headers["retry-after"] == "5"
            (line,) = re.findall(r'<p class="unavailable">([^<]*)</p>', answer.text)
            assert "\n" not in line and line.startswith("the database cannot be read: "), line
            assert ("127.0.0.1" in line) if is_postgres(url) else ("no database file there" in line), line
            assert "Traceback" not in answer.text and '<meta http-equiv="refresh" content="5">' in answer.text
        health = web.get("/health")
        assert health.status == 503 and json.loads(health.body)["problems"][0]["kind"] == "database"
        back()
        assert web.get("/").status == 200 and web.get("/worker/heartbeat").status == 200
    finally:
        assert web.stop() == 0
        if is_postgres(url):
            proxy.close()
    assert "Traceback" not in web.log(), web.log()


# -- with a real supervisor ---------------------------------------------------------------------------------------


def test_a_live_supervisor_is_named_and_health_is_200(tmp_path: Path, store_url: str) -> None:
    worker_package(tmp_path, ["healthy"])
    supervisor = SupervisorProcess(tmp_path, store_url)
    web = WebProcess(tmp_path, store_url)
    try:
        wait_until(lambda: web.get("/worker/healthy").status == 200 and "healthy run" in web.get("/worker/healthy").text,
                   timeout=60, what="a run of healthy with its output")
        page = web.get("/").text
        if is_postgres(store_url):
            assert re.search(r'<p class="liveness alive">nodes: 1 alive \([^)]+\)</p>', page), page
            nodes = web.get("/nodes").text
            assert '<span class="node alive">alive</span>' in nodes and f":{supervisor.pid}</td>" in nodes
        else:
            assert f'<p class="liveness alive">supervisor: running (pid {supervisor.pid} on ' in page
            assert f"running, pid {supervisor.pid} on" in web.get("/nodes").text
        health = wait_until(lambda: (h := web.get("/health")).status == 200 and h, timeout=30, what="healthy")
        assert json.loads(health.body)["health"] == "healthy"
    finally:
        supervisor.stop()
        assert web.stop() == 0
    assert "Traceback" not in web.log(), web.log()


# -- the command ---------------------------------------------------------------------------------------------------


def web_command(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SUPERVISOR_")}
    return subprocess.run([sys.executable, "-m", "supervisor", "web", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL, env={**environ, **(env or {})})


@pytest.mark.parametrize("listen", ["nonsense", "127.0.0.1:", ":8080", "127.0.0.1:99999", "127.0.0.1:http"])
def test_a_bad_listen_address_is_one_line(tmp_path: Path, listen: str) -> None:
    result = web_command("--listen", listen, "--db", f"sqlite:///{tmp_path}/x.db", cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == "", result
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"{os.path.basename(sys.executable)} -m supervisor: error: ") and listen in line, line


def test_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = web_command("--listen", f"127.0.0.1:{port}", cwd=tmp_path)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.endswith(f"cannot listen on 127.0.0.1:{port}: Address already in use (--listen)"), line


def test_settings_resolve_as_for_status(tmp_path: Path) -> None:
    fill(f"sqlite:///{tmp_path}/from-config.db")
    config = tmp_path / "web.toml"
    config.write_text('database = "sqlite:///from-config.db"\n')  # relative to the file's directory
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for args, env in ((["--config", str(config)], {}), ([], {"SUPERVISOR_CONFIG": str(config)}),
                      ([], {"SUPERVISOR_DB": f"sqlite:///{tmp_path}/from-config.db"})):
        web = WebProcess(elsewhere, None, args, env=env)
        try:
            assert "heartbeat" in web.get("/").text, (args, env)
            assert "from-config.db" in web.log()
        finally:
            assert web.stop() == 0
    # A setting `status` does not take is refused the same way, before the command or after it.
    before = subprocess.run([sys.executable, "-m", "supervisor", "--workers", "jobs", "web"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert before.returncode == 2 and "error: web takes no --workers (see " in before.stderr, before.stderr
    after = web_command("--workers", "jobs", cwd=tmp_path)
    assert after.returncode == 2 and "unrecognized arguments: --workers jobs" in after.stderr, after.stderr


# -- the pure parts ---------------------------------------------------------------------------------------------------


def test_fault_stack_takes_faulthandlers_lines_only() -> None:
    assert fault_stack("nothing special\n") is None
    stack = fault_stack(CRASH_STDERR)
    assert stack is not None and stack.startswith("Fatal Python error") and stack.endswith("parse_with_buggy_extension")
    threads = ("Thread 0x01 (most recent call first):\n  File \"a.py\", line 1 in f\n\n"
               "Current thread 0x02 (most recent call first):\n  File \"b.py\", line 2 in g\nafter\n")
    assert fault_stack("before\n" + threads) == threads.rsplit("after", 1)[0].strip()


def test_markup_escapes_everything_it_did_not_make() -> None:
    assert tag("p", XSS, title='"><script>') == ('<p title="&quot;&gt;&lt;script&gt;">&lt;img src=x '
                                                 'onerror=alert(1)&gt;</p>')
    assert tag("p", Html("<b>ours</b>"), None, 3) == "<p><b>ours</b>3</p>"
    assert escape("a & b") == "a &amp; b" and tag("meta", charset="utf-8") == '<meta charset="utf-8">'
    block = text_block("x" * 10 + "\x1b[31mred\n" + "end", 8)
    assert "earlier characters not shown" in block and "\x1b" not in block

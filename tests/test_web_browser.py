"""The web pages in a real browser (issue 17): Debian's headless Chromium, driven by Playwright, reading the pages
of a real supervisor's record whose workers succeed, raise, segfault, time out, and print HTML to stderr.

Playwright rather than Selenium: a dialog is an event it reports on every page (`page.on("dialog")`), and a
context with JavaScript off is one argument; with Selenium an alert is found only by asking for it at the right
moment, and JavaScript off means Chrome preferences. Playwright's own browser download cannot work here, and is
not needed: it drives the distribution's /usr/bin/chromium.

Skipped, with the reason, where Chromium or Playwright is missing, except under CI=true, where that fails.
The screenshot of the status page goes to the test's directory; with WEB_SCREENSHOT=docs/web-status.png it is
also written there (how the README's was made).
"""
from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from typing import Any, Iterator

import pytest

from helpers import Record, SupervisorProcess, wait_until, worker_package
from webtools import WebProcess

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
# As the machine's notes ask of Chromium here: headless, and none of its own network traffic (updates, sync,
# QUIC) on a closed network; no sandbox, since the tests may run as root.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
XSS = "<img src=x onerror=alert(1)>"
WORKERS = {
    "succeeds": '''
from supervisor import worker


@worker(interval=3600)
def succeeds(ctx):
    print("all good")
''',
    "raises": '''
from supervisor import worker


def fail_loudly():
    raise ValueError("the worker raised on purpose")


@worker(interval=3600)
def raises(ctx):
    fail_loudly()
''',
    "segfaults": '''
import ctypes

from supervisor import worker


def crash_in_c():
    ctypes.string_at(0)  # reads address 0: SIGSEGV inside a C function


@worker(interval=3600)
def segfaults(ctx):
    crash_in_c()
''',
    "times_out": '''
import select

from supervisor import worker


def wait_for_upstream():
    select.select([], [], [])  # an answer that never comes: only the timeout ends the run


@worker(interval=3600, timeout=0.5, grace=1)
def times_out(ctx):
    wait_for_upstream()
''',
    "prints_html": f'''
import sys

from supervisor import worker


@worker(interval=3600)
def prints_html(ctx):
    print({XSS!r}, file=sys.stderr)
    raise RuntimeError("printed markup to stderr")
''',
}
OUTCOMES = {"succeeds": "succeeded", "raises": "error", "segfaults": "crash", "times_out": "timeout",
            "prints_html": "error"}


def browser_missing() -> str | None:
    """Why no browser test can run here, or None."""
    if not os.path.exists(CHROMIUM):
        return f"no {CHROMIUM} (Debian's chromium package; .ci/run installs it)"
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed (pip install -e '.[dev]')"
    return None


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Chromium from the distribution, closed (with Playwright's driver) after the test."""
    reason = browser_missing()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI must run the browser test, not skip it)", pytrace=False)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class Watched:
    """A page that records every dialog (and dismisses it) and every console error, whatever it navigates to."""

    def __init__(self, context: Any) -> None:
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.page = context.new_page()
        self.page.on("dialog", self._dialog)
        self.page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def open(self, url: str) -> Any:
        response = self.page.goto(url)
        assert response is not None and response.status == 200, (url, response and response.status)
        return self.page


def row(page: Any, worker: str) -> Any:
    return page.locator("tbody tr").filter(has=page.locator(f'a[href="./worker/{worker}"]'))


def test_the_pages_of_a_real_run_in_a_real_browser(tmp_path: Path, db: Path, record: Record, browser: Any) -> None:
    worker_package(tmp_path, [], extra=WORKERS)
    url = f"sqlite:///{db}"
    supervisor = SupervisorProcess(tmp_path, url)
    web: WebProcess | None = None
    try:
        # Each worker runs once at the start (then not for an hour): the record stays as it is while we look.
        wait_until(lambda: all(record.outcomes(name) == [outcome] for name, outcome in OUTCOMES.items()),
                   timeout=60, what="one run of each worker, each with its outcome")
        web = WebProcess(tmp_path, url)
        # JavaScript on, in a zone far from UTC: the times are shown in it, UTC on hover.
        context = browser.new_context(timezone_id="Asia/Tokyo", viewport={"width": 1360, "height": 640})
        watched = Watched(context)
        page = watched.open(web.url + "/")
        assert page.locator("tbody tr").count() == len(OUTCOMES)
        for name, outcome in OUTCOMES.items():
            assert row(page, name).locator(".outcome").inner_text() == outcome, name
        assert page.locator(".liveness").inner_text() == f"supervisor: running (pid {supervisor.pid} on " \
            f"{page.locator('.liveness').inner_text().rsplit(' on ', 1)[1]}"
        assert "Asia/Tokyo" in page.locator("#zone").inner_text()
        last_run = row(page, "succeeds").locator("time").first
        assert last_run.inner_text().endswith(" ago") and "(20" in last_run.get_attribute("title")
        assert last_run.get_attribute("title").endswith(" UTC)")
        screenshot = tmp_path / "web-status.png"
        page.screenshot(path=str(screenshot), full_page=True)
        assert screenshot.stat().st_size > 10_000
        if os.environ.get("WEB_SCREENSHOT"):
            shutil.copy(screenshot, ROOT / os.environ["WEB_SCREENSHOT"])

        # The segfault: from its last error to its failure, which names SIGSEGV and the worker's own frame.
        row(page, "segfaults").locator("a", has_text="crashed with SIGSEGV").click()
        page.wait_for_url("**/failure/*")
        assert page.locator("dd .ended-by").inner_text() == "SIGSEGV"
        stack = page.locator("h2:text-is('stack (faulthandler)') + pre").inner_text()
        assert "Fatal Python error: Segmentation fault" in stack
        assert "segfaults.py" in stack and "in crash_in_c" in stack and "in segfaults" in stack
        when = page.locator("dd time")
        assert "UTC" not in when.inner_text() and when.get_attribute("title").endswith(" UTC")

        # The timeout: the stack of the hung run, taken when it was stopped.
        failures = watched.open(web.url + "/worker/times_out").locator("a", has_text="failure")
        failures.first.click()
        page.wait_for_url("**/failure/*")
        hung = page.locator("h2:text-is('stack when it was stopped (faulthandler)') + pre").inner_text()
        assert "in wait_for_upstream" in hung and "times_out.py" in hung

        # The worker that printed HTML: shown as text on its page and its failure's, never run as markup.
        page = watched.open(web.url + "/worker/prints_html")
        page.locator("details summary").first.click()
        assert XSS in page.locator("details pre").first.inner_text()
        page.locator("a", has_text="failure").first.click()
        page.wait_for_url("**/failure/*")
        assert XSS in page.locator("h2:text-is('stderr (tail)') + pre").inner_text()
        assert page.locator("img").count() == 0
        for path in ("/", "/nodes", "/worker/succeeds", "/worker/segfaults"):
            watched.open(web.url + path)
        assert watched.dialogs == [], watched.dialogs
        # Nothing the Content-Security-Policy refused (an inline style or script would be), no script error.
        assert watched.errors == [], watched.errors
        context.close()

        # JavaScript off: every page still has everything, its times in UTC.
        still = Watched(browser.new_context(java_script_enabled=False))
        page = still.open(web.url + "/")
        assert page.locator("tbody tr").count() == len(OUTCOMES)
        for name, outcome in OUTCOMES.items():
            assert row(page, name).locator(".outcome").inner_text() == outcome, name
        assert page.locator("#zone").inner_text() == "times in UTC"
        assert row(page, "succeeds").locator("time").first.get_attribute("title").endswith(" UTC")
        row(page, "segfaults").locator("a", has_text="crashed with SIGSEGV").click()
        page.wait_for_url("**/failure/*")
        assert page.locator("dd time").inner_text().endswith(" UTC")
        assert "in crash_in_c" in page.locator("h2:text-is('stack (faulthandler)') + pre").inner_text()
        page = still.open(web.url + "/worker/prints_html")
        assert page.locator("tbody tr").count() == 2  # its one run, and its one failure
        assert XSS in page.locator("details pre").first.text_content() and page.locator("img").count() == 0
        page = still.open(web.url + "/nodes")
        assert "SQLite runs one supervisor" in page.locator(".liveness").inner_text()
        assert still.dialogs == [] and still.errors == []
        page.context.close()
    finally:
        supervisor.stop()
        if web is not None:
            assert web.stop() == 0
    assert "Traceback" not in web.log(), web.log()

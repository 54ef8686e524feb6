"""--dbguard-html: one self-contained page, checked in a real headless Chromium.

The browser is driven over the Chrome DevTools Protocol (websocket-client): console errors and
network requests are collected from the first byte, header clicks and row clicks are real mouse
events at the element's position, and a screenshot is saved as a test artifact
(``$DBGUARD_ARTIFACTS`` or ``artifacts/`` at the repository root).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests import pgserver
from tests.report_scenario import BUDGET_SITE, ODD_NODEID, run_scenario

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
ARTIFACTS = Path(os.environ.get("DBGUARD_ARTIFACTS", Path(__file__).parent.parent / "artifacts"))


def chromium_or_skip() -> str:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    message = ("The HTML report test needs a headless Chromium and none is installed: "
               "apt-get install -y chromium (.ci/run does this).")
    if pgserver.ci_mode():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


class DevTools:
    """A minimal Chrome DevTools Protocol session on one page: commands and collected events."""

    def __init__(self, ws_url: str) -> None:
        import websocket

        # Chromium refuses websocket upgrades that carry an Origin it was not told to allow
        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        call_id = self.next_id
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)

    def wait_for(self, event: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in self.events:
                if message["method"] == event:
                    return message
            self.ws.settimeout(max(0.1, deadline - time.monotonic()))
            message = json.loads(self.ws.recv())
            if "method" in message:
                self.events.append(message)
        raise TimeoutError(f"no {event} within {timeout}s")

    def js(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r} raised: {result['exceptionDetails']}")
        return result["result"].get("value")

    def click(self, selector: str) -> None:
        """A real left click in the middle of the first element matching `selector`."""
        box = self.js(f"""(() => {{
            const el = document.querySelector({json.dumps(selector)});
            el.scrollIntoView({{block: "center"}});
            const r = el.getBoundingClientRect();
            return {{x: r.left + r.width / 2, y: r.top + r.height / 2}};
        }})()""")
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=box["x"], y=box["y"],
                      button="left", clickCount=1)

    def close(self) -> None:
        self.ws.close()


@pytest.fixture
def browser(tmp_path: Path):
    """A fresh headless Chromium (own profile, no network services) and a CDP session on it."""
    executable = chromium_or_skip()
    profile = tmp_path / "chromium-profile"
    log = (tmp_path / "chromium.log").open("wb")
    process = subprocess.Popen(
        [executable, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--disable-default-apps", "--disable-extensions",
         f"--user-data-dir={profile}", "--remote-debugging-address=127.0.0.1",
         "--remote-debugging-port=0", "--window-size=1400,1000", "about:blank"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    devtools = None
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text().strip():
            if process.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail("Chromium did not start:\n"
                            + (tmp_path / "chromium.log").read_text(errors="replace")[-3000:])
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as answer:
            targets = json.load(answer)
        page = next(t for t in targets if t["type"] == "page")
        devtools = DevTools(page["webSocketDebuggerUrl"])
        yield devtools
    finally:
        if devtools is not None:
            devtools.close()
        # the browser's own process group, started above with start_new_session
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        log.close()


ROWS_JS = """Array.from(document.querySelectorAll("#tests > tbody > tr[data-i]")).map(r => ({
    nodeid: r.cells[0].textContent, call: Number(r.cells[2].dataset.v), hidden: r.hidden}))"""


def test_html_report_in_headless_chromium(djproject, browser):
    run_scenario(djproject, "--dbguard-html", "report.html")
    page = djproject.path / "report.html"
    for domain in ("Runtime", "Log", "Page", "Network"):
        browser.send(f"{domain}.enable")
    browser.send("Page.navigate", url=page.as_uri())
    browser.wait_for("Page.loadEventFired")
    assert browser.js("document.documentElement.dataset.ready") == "true"

    rows = browser.js(ROWS_JS)
    names = [r["nodeid"] for r in rows]
    assert names == sorted(names) and len(names) == 5
    assert ODD_NODEID in names

    browser.click("#tests th:nth-child(3) button")  # Call: numbers, largest first
    rows = browser.js(ROWS_JS)
    calls = [r["call"] for r in rows]
    assert calls == sorted(calls, reverse=True) and calls[0] == 5
    assert rows[0]["nodeid"] == "test_shop.py::test_over_budget", rows
    assert browser.js("document.querySelector('#tests th:nth-child(3)')"
                      ".getAttribute('aria-sort')") == "descending"
    browser.click("#tests th:nth-child(3) button")
    calls = [r["call"] for r in browser.js(ROWS_JS)]
    assert calls == sorted(calls)
    browser.click("#tests th:nth-child(1) button")
    assert [r["nodeid"] for r in browser.js(ROWS_JS)] == sorted(names)

    # drill-down: query shapes with call sites, and the finding with its evidence
    over = sorted(names).index("test_shop.py::test_over_budget")
    browser.click(f'#tests tr[data-i="{over}"] button.toggle')
    detail = browser.js("""(() => {
        const row = document.querySelector('#tests tr[data-i="OVER"]');
        const next = row.nextElementSibling;
        return {cls: next.className, text: next.textContent,
                expanded: row.querySelector('button.toggle').getAttribute('aria-expanded')};
    })()""".replace("OVER", str(over)))
    assert detail["cls"] == "detail" and detail["expanded"] == "true"
    assert '"shop_author"' in detail["text"] and f"{BUDGET_SITE} (4×)" in detail["text"]
    assert "[budget] fail" in detail["text"]
    assert "query budget exceeded: 5 queries > budget 2" in detail["text"]
    # sorting keeps an open drill-down under its test
    browser.click("#tests th:nth-child(3) button")
    assert browser.js("""(() => {
        const row = document.querySelector('#tests tr[data-i="OVER"]');
        return row.nextElementSibling && row.nextElementSibling.className;
    })()""".replace("OVER", str(over))) == "detail"

    browser.click("#filter")
    browser.send("Input.insertText", text="odd_name")
    visible = [r["nodeid"] for r in browser.js(ROWS_JS) if not r["hidden"]]
    assert visible == [ODD_NODEID]
    browser.click("#filter")
    browser.js("document.getElementById('filter').value = ''; "
               "document.getElementById('filter').dispatchEvent(new Event('input'))")

    size = browser.js("({w: document.documentElement.scrollWidth, "
                      "h: document.documentElement.scrollHeight})")
    browser.js("window.scrollTo(0, 0)")
    shot = browser.send("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                        clip={"x": 0, "y": 0, "width": size["w"], "height": size["h"],
                              "scale": 1})
    png = base64.b64decode(shot["data"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "html-report.png").write_bytes(png)

    problems = [e for e in browser.events
                if e["method"] == "Runtime.exceptionThrown"
                or (e["method"] == "Runtime.consoleAPICalled"
                    and e["params"]["type"] in ("error", "assert", "warning"))
                or (e["method"] == "Log.entryAdded"
                    and e["params"]["entry"]["level"] in ("error", "warning"))]
    assert problems == []
    requested = [e["params"]["request"]["url"] for e in browser.events
                 if e["method"] == "Network.requestWillBeSent"]
    assert requested == [page.as_uri()], "the page must load nothing besides itself"


def test_html_is_self_contained_and_escapes_names(djproject):
    run_scenario(djproject, "--dbguard-html", "report.html")
    html = (djproject.path / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert "default-src 'none'" in html
    for needle in ("http://", "https://", "src=", "<link", "@import"):
        assert needle not in html, needle
    assert "<b>|x" not in html, "a test name must never become markup"
    assert "test_odd_name[&lt;b&gt;|x`y]" in html
    data = html.split('<script type="application/json" id="dbguard-data">')[1].split("</script>")[0]
    assert "<" not in data
    parsed = json.loads(data)
    assert len(parsed["tests"]) == 5
    assert html.count("<svg") == 3
    assert "Findings by rule" in html and "Queries per test" in html

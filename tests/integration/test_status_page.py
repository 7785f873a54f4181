"""test_status_page: the status page (GET /) in headless Chromium, driven over the DevTools
protocol: with a token configured it asks for one, then shows every C-node and pool instance with
its state, OS pid and call rate and the live events; a SIGKILLed C-node shows up as an event, a
restart and its new pid. Leaves a screenshot in BUILD_DIR/test-output/status_page.png. Chromium
runs in its own process group, which the test ends (no process of it is left)."""

import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request

import websocket  # python3-websocket

import nodex_harness as nx

CHROMIUM = shutil.which("chromium")


class Chromium:
    """One headless Chromium in its own process group, and one page of it over DevTools."""

    def __init__(self, workdir):
        assert CHROMIUM, "chromium is not installed (scripts/deps.sh installs it)"
        self.profile = os.path.join(workdir, "chromium-profile")
        os.makedirs(self.profile)
        self.log_path = os.path.join(workdir, "chromium.log")
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--no-default-browser-check", "--disable-crash-reporter", "--disable-breakpad",
             "--disable-extensions", "--disable-background-networking", "--disable-sync",
             "--window-size=1280,900", "--remote-debugging-port=0",
             "--remote-allow-origins=*", f"--user-data-dir={self.profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)  # its own process group: ended as one
        log.close()
        self.pgid = self.proc.pid
        self.ids = itertools.count(1)
        self.ws = None
        try:
            self._connect()
        except BaseException:
            self.close()
            raise

    def _connect(self):
        port_file = os.path.join(self.profile, "DevToolsActivePort")

        def port():
            if self.proc.poll() is not None:
                raise AssertionError(f"chromium exited with {self.proc.returncode}\n"
                                     + self.log_tail())
            try:
                with open(port_file) as f:
                    lines = f.read().split()
            except OSError:
                return None
            return int(lines[0]) if len(lines) >= 2 else None

        devtools = nx.wait_until(port, 60 * nx.SLOW, what="chromium's DevTools port")

        def page():
            with urllib.request.urlopen(f"http://{nx.HOST}:{devtools}/json/list", timeout=10) as r:
                pages = [t for t in json.load(r) if t["type"] == "page"]
            return pages[0] if pages else None

        target = nx.wait_until(page, 30 * nx.SLOW, what="a chromium page")
        self.ws = websocket.create_connection(target["webSocketDebuggerUrl"], timeout=60,
                                              suppress_origin=True)

    def log_tail(self, n=20):
        with open(self.log_path, errors="replace") as f:
            return "".join(f.readlines()[-n:])

    def send(self, method, **params):
        """One DevTools command; its result (events that come first are skipped)."""
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == msg_id:
                assert "error" not in msg, (method, msg["error"])
                return msg["result"]

    def evaluate(self, expression):
        r = self.send("Runtime.evaluate", expression=expression, returnByValue=True,
                      awaitPromise=True)
        assert "exceptionDetails" not in r, r["exceptionDetails"]
        return r["result"].get("value")

    def navigate(self, url):
        self.send("Page.enable")
        self.send("Page.navigate", url=url)
        nx.wait_until(lambda: self.evaluate("document.readyState") == "complete"
                      and self.evaluate("location.href") == url,
                      30 * nx.SLOW, what=f"{url} to load")

    def wait_for(self, expression, what, timeout=30.0):
        """Waits until `expression` (JavaScript) is truthy in the page; returns its value."""
        last = None

        def check():
            nonlocal last
            last = self.evaluate(expression)
            return last

        try:
            return nx.wait_until(check, timeout * nx.SLOW, interval=0.1, what=what)
        except AssertionError as e:
            text = self.evaluate("document.body.innerText")
            raise AssertionError(f"{e}; last value {last!r}; the page reads:\n{text}") from None

    def screenshot(self, path):
        data = self.send("Page.captureScreenshot", format="png")["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def close(self):
        """Ends the whole process group by its id; fails if any process of it is left."""
        if self.ws:
            try:
                self.ws.close()
            except Exception:
                pass
        if self.proc.poll() is None:
            try:
                os.killpg(self.pgid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=15 * nx.SLOW)
            except subprocess.TimeoutExpired:
                pass
        deadline = time.monotonic() + 15 * nx.SLOW
        while nx.pids_in_group(self.pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = nx.pids_in_group(self.pgid)
        if left:
            try:
                os.killpg(self.pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        assert not left, f"chromium processes left after SIGTERM to its group: {left}"


# JavaScript: the text of one field of one C-node's row (its main row, not an instance's)
def field(name, f):
    return (f"(() => {{ const r = document.querySelector('#cnodes tr[data-cnode=\"{name}\"]"
            f":not([data-instance])'); const c = r && r.querySelector('[data-field=\"{f}\"]');"
            f" return c ? c.textContent : null; }})()")


def test_status_page_shows_cnodes_rates_and_a_restart_live(session, tmp_path):
    token_path, token = nx.token_file(session, "viewer")
    d = nx.Nodexd(session, [nx.example_cnode_spec("example"),
                            nx.example_cnode_spec("pool", instances=2)],
                  extra={"auth": {"principals": [
                      {"name": "viewer", "token_file": token_path,
                       "allow": ["call", "watch"]}]}})
    d.token = token
    browser = None
    try:
        d.start()
        d.wait_up("example")
        d.wait_for_state("pool", "up", pred=lambda i: i["instances_up"] == 2)
        browser = Chromium(str(tmp_path))
        url = f"http://{nx.HOST}:{d.port}/"
        browser.navigate(url)
        # no token yet: the page says it needs one and shows nothing of nodexd
        browser.wait_for("document.getElementById('banner').textContent.includes('token')",
                         "the page to ask for a token")
        assert browser.evaluate("document.querySelectorAll('#cnodes tbody tr').length") == 0
        browser.evaluate(f"document.getElementById('token').value = {json.dumps(token)};"
                         "document.getElementById('token-save').click(); true")
        assert browser.evaluate("sessionStorage.getItem('nodexd.token')") == token

        info = d.info("example")
        old_pid = info["os_pid"]
        browser.wait_for(f"{field('example', 'state')} === 'up' && "
                         f"{field('example', 'os_pid')} === '{old_pid}'",
                         "the example C-node, up, with its OS pid")
        pool = d.info("pool")["pool"]
        for inst in pool:
            browser.wait_for(
                f"(() => {{ const r = document.querySelector('#cnodes tr[data-cnode=\"pool\"]"
                f"[data-instance=\"{inst['instance']}\"]'); return r && r.querySelector("
                f"'[data-field=\"os_pid\"]').textContent === '{inst['os_pid']}'; }})()",
                f"pool instance {inst['instance']} with its pid")
        browser.wait_for("document.getElementById('events-state').textContent === '(live)'",
                         "the event stream to be live")
        assert browser.evaluate("document.getElementById('self').textContent") == d.node_name

        # calls between two polls show as a rate above zero
        def rate_shown():
            for _ in range(5):
                r = d.call("example", {"$tuple": [{"$atom": "ping"}, "page"]})
                assert r.status == 200, r
            v = browser.evaluate(field("example", "rate"))
            return v if v and float(v) > 0 else None

        rate = nx.wait_until(rate_shown, 30 * nx.SLOW, interval=0.05, what="a call rate")
        print(f"call rate shown: {rate}/s")

        # SIGKILL the C-node: the page shows the event, the restart and the new pid
        os.kill(old_pid, signal.SIGKILL)
        new = d.wait_new_pid("example", old_pid)
        browser.wait_for(
            "Array.from(document.querySelectorAll('#events li[data-name=\"example\"]'))"
            ".some(li => li.dataset.state === 'down' || li.dataset.state === 'restarting')",
            "the down event of example")
        browser.wait_for(f"{field('example', 'state')} === 'up' && "
                         f"{field('example', 'os_pid')} === '{new['os_pid']}' && "
                         f"{field('example', 'restarts')} === '{new['restarts']}'",
                         "example up again with its new pid and restart count")
        assert new["restarts"] >= 1
        last = browser.evaluate(field("example", "last_error"))
        assert last, "the last error (or exit) of example is shown"
        print(f"last error shown: {last}")

        out_dir = os.path.join(nx.BUILD_DIR, "test-output")
        os.makedirs(out_dir, exist_ok=True)
        shot = os.path.join(out_dir, "status_page.png")
        browser.screenshot(shot)
        with open(shot, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        print(f"screenshot: {shot}")
    finally:
        try:
            if browser:
                browser.close()
        finally:
            d.close()

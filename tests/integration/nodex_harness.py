"""nodex_harness: runs nodexd, epmd, erl nodes and C-nodes for the integration tests (stdlib only)."""

import http.client
import json
import os
import re
import resource
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time

REPO_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD_DIR = os.path.abspath(os.environ.get("NODEX_BUILD_DIR") or os.path.join(REPO_DIR, "build"))
SANITIZE = os.environ.get("NODEX_SANITIZE", "OFF").upper() in ("ON", "1", "TRUE", "YES")
# Sanitized binaries start and run slower: stretch waits, never the timings a test asserts.
SLOW = 3.0 if SANITIZE else 1.0
# The ThreadSanitizer build (SANITIZE is set for it too): its shadow memory inflates RSS.
TSAN = os.environ.get("NODEX_TSAN", "OFF").upper() in ("ON", "1", "TRUE", "YES")

NODEXD = os.path.join(BUILD_DIR, "nodexd")
EXAMPLE_CNODE = os.path.join(BUILD_DIR, "example_cnode")
TEST_CNODE = os.path.join(BUILD_DIR, "tests", "test_cnode")

READY_RE = re.compile(
    r"^nodexd ready http=(?P<host>[^\s:]+):(?P<port>\d+) node=(?P<node>\S+)"
    r"(?: grpc=(?P<grpc_host>[^\s:]+):(?P<grpc_port>\d+))?$"
)
HOST = "127.0.0.1"


def unique(prefix="nx"):
    return f"{prefix}{secrets.token_hex(4)}"


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def proc_start_time(pid):
    """Start time (clock ticks) of /proc/<pid>, or None if gone; tells a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[19])


def proc_alive(pid, start_time=None):
    """True if pid runs (not a zombie) and, when given, is still the process that started then."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return False  # dead; our container's init may never reap orphans
    return start_time is None or int(fields[19]) == start_time


def pids_with_arg(token):
    """Pids of live processes whose argv contains `token` exactly."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if token.encode() in argv and proc_alive(int(entry)):
            found.append(int(entry))
    return found


def pids_in_group(pgid):
    """Pids of live (not zombie) processes in process group `pgid`."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # not a process, or gone
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            found.append(int(entry))
    return found


def token_file(session, name):
    """A fresh bearer token for principal `name` in a 0400 file: (path, token)."""
    token = f"{name}-" + secrets.token_hex(16)
    path = os.path.join(session.dir, f"{name}.{unique('tok')}.token")
    with open(path, "w") as f:
        f.write(token + "\n")
    os.chmod(path, 0o400)
    return path, token


def wait_until(predicate, timeout, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


def to_yaml(value, indent=0):
    """Block-style YAML for dicts/lists of scalars; strings double-quoted (JSON escapes are YAML)."""
    pad = "  " * indent
    if isinstance(value, dict):
        if not value:
            return pad + "{}\n"
        out = ""
        for k, v in value.items():
            if isinstance(v, (dict, list)) and v:
                out += f"{pad}{k}:\n" + to_yaml(v, indent + 1)
            else:
                out += f"{pad}{k}: {_yaml_scalar(v)}\n"
        return out
    if isinstance(value, list):
        if not value:
            return pad + "[]\n"
        out = ""
        for v in value:
            if isinstance(v, (dict, list)) and v:
                body = to_yaml(v, indent + 1)
                out += f"{pad}- " + body[len(pad) + 2 :]
            else:
                out += f"{pad}- {_yaml_scalar(v)}\n"
        return out
    return pad + _yaml_scalar(value) + "\n"


def _yaml_scalar(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if v is None:
        return "null"
    if isinstance(v, dict):
        return "{}"
    if isinstance(v, list):
        return "[]"
    return json.dumps(str(v))


class Response:
    def __init__(self, status, headers, body, elapsed):
        self.status = status
        self.headers = headers  # dict with lower-case names
        self.body = body
        self.elapsed = elapsed

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<Response {self.status} {self.body[:300]!r} in {self.elapsed * 1000:.0f} ms>"


def http_request(port, method, path, body=None, headers=None, timeout=30.0, conn=None,
                 context=None):
    """One HTTP request (HTTPS with an ssl `context`); reuses `conn` (keep-alive) when given."""
    own = conn is None
    if own:
        conn = (http.client.HTTPSConnection(HOST, port, timeout=timeout, context=context)
                if context else http.client.HTTPConnection(HOST, port, timeout=timeout))
    if isinstance(body, str):
        body = body.encode()
    t0 = time.monotonic()
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return Response(
            r.status, {k.lower(): v for k, v in r.getheaders()}, data, time.monotonic() - t0
        )
    finally:
        if own:
            conn.close()


class Session:
    """One test session: private epmd on a free port, temp HOME, random cookie, every pid we start."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="nodex-it-")
        self.home = os.path.join(self.dir, "home")
        os.mkdir(self.home, 0o700)
        self.cookie = secrets.token_hex(16).upper()
        self.epmd_port = free_port()
        self.env = dict(os.environ)
        self.env.update(
            HOME=self.home,
            ERL_EPMD_PORT=str(self.epmd_port),
            NODEX_COOKIE=self.cookie,
            ASAN_OPTIONS="detect_leaks=1:abort_on_error=0",
            UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1",
        )
        self.procs = []  # (Popen, description) of everything we started
        self.daemons = []
        # The cookie reaches erl through an args file, not the command line.
        self.erl_args_file = os.path.join(self.dir, "erl.args")
        fd = os.open(self.erl_args_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"-setcookie {self.cookie}\n")
        # 127.0.0.1 only: other loopback addresses stay free for tests that listen there
        self.epmd = self.spawn(["epmd", "-address", HOST, "-port", str(self.epmd_port)], "epmd")
        wait_until(self.epmd_answers, 10 * SLOW, what="epmd")

    def log_path(self, name):
        return os.path.join(self.dir, name + ".log")

    def spawn(self, argv, name, **kw):
        log = open(self.log_path(name), "ab")
        kw.setdefault("stdout", log)
        kw.setdefault("stderr", subprocess.STDOUT)
        kw.setdefault("stdin", subprocess.DEVNULL)
        p = subprocess.Popen(argv, env=kw.pop("env", self.env), **kw)
        log.close()
        self.procs.append((p, name))
        return p

    def epmd_answers(self):
        return self.epmd_names() is not None

    def epmd_names(self):
        """Names registered in our epmd (NAMES_REQ), or None if it does not answer."""
        try:
            with socket.create_connection((HOST, self.epmd_port), timeout=1) as s:
                s.sendall(struct.pack(">HB", 1, 110))
                data = b""
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
        except OSError:
            return None
        if len(data) < 4:
            return None
        return re.findall(r"name (\S+) at port", data[4:].decode(errors="replace"))

    def epmd_port_of(self, sname):
        """Distribution port registered for `sname` (PORT_PLEASE2_REQ), or None."""
        with socket.create_connection((HOST, self.epmd_port), timeout=2) as s:
            req = b"z" + sname.encode()
            s.sendall(struct.pack(">H", len(req)) + req)
            data = s.recv(1024)
        if len(data) < 4 or data[0] != 119 or data[1] != 0:
            return None
        return struct.unpack(">H", data[2:4])[0]

    def erl_eval(self, expr, timeout=30.0, name=None):
        """Runs `expr` (Erlang expressions, without the final '.') on a fresh long-named erl node
        sharing our cookie and epmd; returns (exit status, output)."""
        name = name or unique("nxerl")
        script = f"{expr}, halt(0)."
        argv = ["erl", "-noshell", "-name", f"{name}@{HOST}", "-args_file", self.erl_args_file,
                "-kernel", "net_ticktime", "4", "-eval", script]
        p = self.spawn(argv, name, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            out, _ = p.communicate(timeout=timeout * SLOW)
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
            raise AssertionError(f"erl timed out: {expr}\n{out.decode(errors='replace')}")
        return p.returncode, out.decode(errors="replace")

    def close(self):
        for d in list(self.daemons):
            d.close()
        for p, _name in reversed(self.procs):
            end_process(p)
        shutil.rmtree(self.dir, ignore_errors=True)


def end_process(p, sig=signal.SIGTERM, grace=5.0):
    """Ends one process we started, by its pid: `sig`, then SIGKILL after `grace` seconds."""
    if p.poll() is not None:
        return p.returncode
    try:
        p.send_signal(sig)
        return p.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        p.kill()
        return p.wait()


def test_cnode_spec(name, mode="serve", *extra, **overrides):
    """A cnodes: entry running tests/test_cnode in `mode`, with short timeouts for the suite."""
    spec = {
        "name": name,
        "executable": TEST_CNODE,
        "args": ["{sname}", "{hostname}", "{cookie}", "{gateway_sname}", mode, *extra],
        "spawn_inactive_timeout_ms": int(3000 * SLOW),
        "call_timeout_ms": 5000,
        "backoff_initial_ms": 50,
        "backoff_max_ms": 200,
        "shutdown_timeout_ms": 1000,
    }
    spec.update(overrides)
    return spec


def example_cnode_spec(name="example", **overrides):
    # args spelled out: only the README test relies on the default argv template.
    spec = {"name": name, "executable": EXAMPLE_CNODE, "backoff_initial_ms": 50,
            "args": ["{sname}", "{hostname}", "{cookie}", "{gateway_sname}"]}
    spec.update(overrides)
    return spec


# erlang_nodes defaults of every nodexd the suite starts.
TEST_ERLANG_NODES = {"rpc": True, "load_modules": True, "spawn": True, "rpc_nodes": [f"*@{HOST}"]}


class Nodexd:
    """One nodexd process with its config, log and the C-node pids it reported."""

    def __init__(self, session, cnodes, node=None, http=None, extra=None, nofile=None,
                 env=None, name=None):
        self.session = session
        self.sname = name or unique("nx")
        self.node_name = f"{self.sname}@{HOST}"
        self.config = {
            "node": {"name": self.node_name, "tick_time_ms": 4000, **(node or {})},
            "http": {"listen": f"{HOST}:0", **(http or {})},
            "grpc": {"listen": f"{HOST}:0"},
            # the suite exercises rpc, code loading and children: switched on here (they are off
            # by default); tests of the defaults pass their own erlang_nodes values
            "erlang_nodes": dict(TEST_ERLANG_NODES),
            "cnodes": cnodes,
        }
        if extra:
            extra = dict(extra)
            self.config["erlang_nodes"].update(extra.pop("erlang_nodes", None) or {})
            self.config.update(extra)
        self.config_path = os.path.join(session.dir, f"{self.sname}.yaml")
        with open(self.config_path, "w") as f:
            f.write(to_yaml(self.config))
        self.log_file = session.log_path(self.sname)
        self.nofile = nofile
        self.env = dict(session.env, **(env or {}))
        self.proc = None
        self.port = None
        self.https_context = None  # an ssl.SSLContext when http.tls is on
        self.seen = {}  # C-node os_pid -> start time, from every GET we made
        self.lines = []
        self._pumps = []
        self.ready = threading.Event()
        self._log_lock = threading.Lock()
        self.token = None  # bearer token request() sends unless the caller sets Authorization
        session.daemons.append(self)

    # --- process -------------------------------------------------------------------------
    def start(self, wait=True, timeout=20.0):
        limit = self.nofile

        def preexec():
            if limit:
                _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
                want = limit if hard == resource.RLIM_INFINITY else min(limit, hard)
                resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

        self.proc = subprocess.Popen(
            [NODEXD, "--config", self.config_path], env=self.env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=preexec)
        self.session.procs.append((self.proc, self.sname))
        self._pumps = [threading.Thread(target=self._pump, args=(stream, tag), daemon=True)
                       for stream, tag in ((self.proc.stdout, "out"), (self.proc.stderr, "err"))]
        for pump in self._pumps:
            pump.start()
        if wait:
            self.wait_ready(timeout)
        return self

    def _pump(self, stream, tag):
        with open(self.log_file, "ab") as log:
            for raw in iter(stream.readline, b""):
                line = raw.decode(errors="replace").rstrip("\r\n")
                with self._log_lock:
                    self.lines.append((tag, line))
                    log.write(f"[{tag}] {line}\n".encode())
                    log.flush()
                m = READY_RE.match(line) if tag == "out" else None
                if m and not self.ready.is_set():
                    self.port = int(m.group("port"))
                    self.ready_node = m.group("node")
                    gport = m.group("grpc_port")
                    self.grpc_port = int(gport) if gport else None
                    self.ready.set()

    def wait_ready(self, timeout=20.0):
        deadline = time.monotonic() + timeout * SLOW
        while not self.ready.wait(0.05):
            if self.proc.poll() is not None:
                time.sleep(0.1)  # let the pumps drain
                raise AssertionError(
                    f"nodexd exited with {self.proc.returncode} before its ready line\n"
                    + self.log_tail())
            if time.monotonic() > deadline:
                raise AssertionError("nodexd printed no ready line\n" + self.log_tail())

    def log_tail(self, n=60):
        with self._log_lock:
            tail = self.lines[-n:]
        return "---- nodexd log tail ----\n" + "\n".join(f"[{t}] {l}" for t, l in tail)

    def transitions(self, name):
        """The state changes nodexd logged for C-node `name` so far, as (from, to) pairs."""
        return re.findall(rf" cnode {re.escape(name)}: (\w+) -> (\w+)$", self.log_text(), re.M)

    def stop_and_drain(self, sig=signal.SIGTERM):
        """stop(sig), then waits until every line nodexd wrote has been read; returns the status."""
        status = self.stop(sig)
        for pump in self._pumps:
            pump.join(10 * SLOW)
        return status

    def log_text(self):
        with self._log_lock:
            return "\n".join(l for _t, l in self.lines)

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=15.0):
        """Sends `sig` and returns nodexd's exit status (raises if it does not exit in time)."""
        self.record_pids()
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout * SLOW)

    def close(self):
        """Ends nodexd by pid, then fails if any C-node it spawned survives (and ends those)."""
        if self in self.session.daemons:
            self.session.daemons.remove(self)
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.record_pids()
            except Exception:
                pass
            end_process(self.proc, signal.SIGTERM, grace=10.0 * SLOW)
        survivors = self.survivors(wait=3.0 * SLOW)
        for pid in survivors:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        assert not survivors, f"C-node processes survived nodexd: {survivors}\n" + self.log_tail()
        # The ThreadSanitizer pass (scripts/test.sh): a data race reported by nodexd fails the test.
        text = self.log_text()
        assert "WARNING: ThreadSanitizer" not in text, text[text.find("WARNING: ThreadSanitizer"):][:6000]

    def survivors(self, wait=2.0):
        """C-node pids still alive: those reported by the API plus any process carrying our
        unique gateway sname in its argv."""
        def alive():
            pids = {p for p, st in self.seen.items() if proc_alive(p, st)}
            pids.update(pids_with_arg(self.sname))
            return sorted(pids)

        deadline = time.monotonic() + wait
        while True:
            pids = alive()
            if not pids or time.monotonic() > deadline:
                return pids
            time.sleep(0.05)

    # --- HTTP ----------------------------------------------------------------------------
    def request(self, method, path, body=None, headers=None, timeout=30.0, conn=None):
        if self.token and not any(k.lower() == "authorization" for k in (headers or {})):
            headers = dict(headers or {}, Authorization=f"Bearer {self.token}")
        return http_request(self.port, method, path, body, headers, timeout, conn,
                            self.https_context)

    def connection(self, timeout=30.0):
        if self.https_context:
            return http.client.HTTPSConnection(HOST, self.port, timeout=timeout,
                                               context=self.https_context)
        return http.client.HTTPConnection(HOST, self.port, timeout=timeout)

    def call(self, name, body, content_type="application/json", accept=None, timeout_ms=None,
             conn=None, timeout=30.0, cast=False):
        if not isinstance(body, (str, bytes)):
            body = json.dumps(body)
        headers = {}
        if content_type is not None:
            headers["Content-Type"] = content_type
        if accept is not None:
            headers["Accept"] = accept
        path = f"/cnodes/{name}/{'cast' if cast else 'call'}"
        if timeout_ms is not None:
            path += f"?timeout_ms={timeout_ms}"
        return self.request("POST", path, body, headers, timeout, conn)

    def get_json(self, path, expect=200):
        r = self.request("GET", path)
        assert r.status == expect, f"GET {path}: {r}\n" + self.log_tail()
        data = r.json()
        self._note(data)
        return data

    def _note(self, data):
        items = data.get("cnodes", []) if isinstance(data, dict) and "cnodes" in data else [data]
        for c in items:
            pid = c.get("os_pid") if isinstance(c, dict) else None
            if isinstance(pid, int) and pid > 0 and pid not in self.seen:
                st = proc_start_time(pid)
                if st is not None:
                    self.seen[pid] = st

    def record_pids(self):
        self._note(self.get_json("/cnodes"))

    def info(self, name):
        return self.get_json(f"/cnodes/{name}")

    def wait_for_state(self, name, state, timeout=10.0, pred=None):
        """Polls GET /cnodes/{name} until its state is `state` (and pred(info) holds)."""
        last = {}

        def check():
            nonlocal last
            last = self.info(name)
            return last if last.get("state") == state and (pred is None or pred(last)) else None

        try:
            return wait_until(check, timeout * SLOW, what=f"{name} to be {state}")
        except AssertionError as e:
            raise AssertionError(f"{e}; last: {last}\n" + self.log_tail()) from None

    def wait_up(self, name, timeout=10.0):
        return self.wait_for_state(name, "up", timeout)

    def wait_new_pid(self, name, old_pid, timeout=10.0):
        """Waits until `name` is up again under a pid other than old_pid."""
        return self.wait_for_state(
            name, "up", timeout, pred=lambda i: i.get("os_pid") not in (None, old_pid))


def J(obj):
    """Compact JSON text as nodexd is expected to produce it for replies."""
    return json.dumps(obj, separators=(",", ":"))


def bytes_read(pid):
    """Bytes process `pid` has read so far, all threads (rchar of /proc/PID/io)."""
    with open(f"/proc/{pid}/io") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("rchar:"))


def atom(a):
    return {"$atom": a}


def tup(*items):
    return {"$tuple": list(items)}

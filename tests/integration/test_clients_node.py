"""Runs the Node.js client's test suite (clients/node, `node --test`) as one integration test;
installs its npm dependencies first with `npm ci` unless node_modules is already up to date.
A missing node or npm is a failure, not a skip."""

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile

import clients_harness as ch

NODE_DIR = ch.NODE_CLIENT_DIR


def _installed_lock_is_current():
    """npm writes node_modules/.package-lock.json on install: current if newer than the lock
    file and package.json and every locked package directory exists."""
    installed = os.path.join(NODE_DIR, "node_modules", ".package-lock.json")
    if not os.path.exists(installed):
        return False
    mtime = os.path.getmtime(installed)
    for f in ("package-lock.json", "package.json"):
        if os.path.getmtime(os.path.join(NODE_DIR, f)) > mtime:
            return False
    with open(os.path.join(NODE_DIR, "package-lock.json")) as f:
        lock = json.load(f)
    return all(os.path.isdir(os.path.join(NODE_DIR, p))
               for p in lock.get("packages", {}) if p.startswith("node_modules/"))


def test_node_client_suite():
    node = shutil.which("node")
    npm = shutil.which("npm")
    assert node, "node not found on PATH (Node.js 18+ is required for clients/node)"
    assert npm, "npm not found on PATH (needed for `npm ci` in clients/node)"
    # One npm ci at a time (plain and sanitized suites may run side by side).
    with open(os.path.join(tempfile.gettempdir(), "nodex-clients-node-npm.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _installed_lock_is_current():
            r = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--prefer-offline"],
                               cwd=NODE_DIR, capture_output=True, text=True, timeout=300)
            assert r.returncode == 0, f"npm ci failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    tests = sorted(f"test/{f}" for f in os.listdir(os.path.join(NODE_DIR, "test"))
                   if f.endswith(".test.js"))
    r = subprocess.run([node, "--test", "--test-reporter=spec", *tests], cwd=NODE_DIR,
                       env=dict(os.environ), capture_output=True, text=True, timeout=540)
    print(r.stdout[-20000:])
    print(r.stderr[-5000:], file=sys.stderr)
    assert r.returncode == 0, f"clients/node tests failed (exit {r.returncode})"

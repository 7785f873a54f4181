"""Runs the Python client's own test suite (clients/python/tests) as one integration test."""

import os
import subprocess
import sys

import clients_harness as ch


def test_python_client_suite():
    env = dict(os.environ)
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         os.path.join(ch.PYTHON_CLIENT_DIR, "tests")],
        cwd=ch.PYTHON_CLIENT_DIR, env=env, capture_output=True, text=True, timeout=540)
    print(r.stdout[-20000:])
    print(r.stderr[-5000:], file=sys.stderr)
    assert r.returncode == 0, f"clients/python tests failed (exit {r.returncode})"

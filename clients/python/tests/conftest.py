"""conftest: generates the gRPC stubs, puts src/ on the path, and starts nodexd for the
integration tests (via tests/integration/clients_harness.py)."""

import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
PKG_DIR = os.path.dirname(HERE)
REPO_DIR = os.path.dirname(os.path.dirname(PKG_DIR))

subprocess.run([os.path.join(PKG_DIR, "gen_stubs.sh")], check=True)
sys.path.insert(0, os.path.join(PKG_DIR, "src"))
sys.path.insert(0, os.path.join(REPO_DIR, "tests", "integration"))

import clients_harness as ch  # noqa: E402
import nodex_harness as nx  # noqa: E402


@pytest.fixture(scope="session")
def session():
    s = nx.Session()
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module")
def nodexd(session):
    """One nodexd (gRPC on an ephemeral port) with the "example" and "test" C-nodes up; child
    Erlang nodes allowed for the node-operation tests."""
    d = ch.start_standard(session, extra={
        "grpc": {"listen": f"{nx.HOST}:0"},
        "erlang_nodes": {"count": 0, "ready_timeout_ms": int(30000 * nx.SLOW)},
    })
    try:
        yield d
    finally:
        d.close()


@pytest.fixture
def gw(nodexd):
    import nodex

    g = nodex.Gateway(nodexd.grpc_target)
    try:
        yield g
    finally:
        g.close()

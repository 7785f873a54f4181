"""conftest: pytest fixtures for the nodexd integration suite (private epmd, nodexd factory)."""

import os
import resource
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import nodex_harness as nx  # noqa: E402

# Some tests open over 1100 sockets from this process.
_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if _hard == resource.RLIM_INFINITY or _hard > _soft:
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(_hard, 8192), _hard))


@pytest.fixture(scope="session")
def session():
    s = nx.Session()
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def nodexd(session, request):
    """Factory: nodexd(cnodes=[...], ...) starts a nodexd; every one is ended (by pid) at teardown,
    which fails the test if a C-node it spawned survives it."""
    started = []

    def make(cnodes, start=True, **kw):
        d = nx.Nodexd(session, cnodes, **kw)
        started.append(d)
        if start:
            d.start()
        return d

    yield make
    failed = getattr(request.node, "rep_call", None)
    errors = []
    for d in started:
        if failed is not None and failed.failed and d.proc is not None:
            print(d.log_tail(), file=sys.stderr)
        try:
            d.close()
        except AssertionError as e:
            errors.append(str(e))
    assert not errors, "\n".join(errors)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)

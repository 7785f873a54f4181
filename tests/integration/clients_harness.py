"""clients_harness: nodexd with its gRPC port for the client tests (extends nodex_harness)."""

import os

import nodex_harness as nx

NODEX_CLI = os.path.join(nx.BUILD_DIR, "nodex")
PYTHON_CLIENT_DIR = os.path.join(nx.REPO_DIR, "clients", "python")
NODE_CLIENT_DIR = os.path.join(nx.REPO_DIR, "clients", "node")


class GrpcNodexd(nx.Nodexd):
    """A Nodexd whose gRPC server listens on an ephemeral port (grpc.listen 127.0.0.1:0);
    `grpc_target` is "127.0.0.1:PORT" from the ready line once started."""

    def __init__(self, session, cnodes, extra=None, **kw):
        extra = dict(extra or {})
        extra.setdefault("grpc", {"listen": f"{nx.HOST}:0"})
        super().__init__(session, cnodes, extra=extra, **kw)

    @property
    def grpc_target(self):
        return f"{nx.HOST}:{self.grpc_port}"

    def start(self, wait=True, timeout=20.0):
        super().start(wait=wait, timeout=timeout)
        if wait and self.grpc_port is None:
            raise AssertionError("nodexd's ready line names no grpc= address (gRPC server "
                                 "missing?)\n" + self.log_tail())
        return self


def standard_cnodes():
    """The C-nodes the client tests use: "example" (the example C-node), "test" (tests/test_cnode,
    serve mode, reply filter any), "tagged" (the same, answering only {reply, R} with R) and "victim"
    (a test C-node that tests may crash)."""
    return [nx.example_cnode_spec("example"), nx.test_cnode_spec("test"),
            nx.test_cnode_spec("tagged", reply_filter={"tag": "reply"}),
            nx.test_cnode_spec("victim")]


def start_standard(session, extra=None):
    """Starts a GrpcNodexd with standard_cnodes() and waits until both are up."""
    d = GrpcNodexd(session, standard_cnodes(), extra=extra)
    d.start()
    d.wait_up("example")
    d.wait_up("test")
    d.wait_up("tagged")
    d.wait_up("victim")
    return d

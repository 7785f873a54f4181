"""Gateway: a small, blocking client of the nodexd gRPC API (nodex.v1.Gateway)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterator, List, Optional, Sequence, Tuple, TypeVar

import grpc

from .terms import Etf, Term, from_payload, to_payload, to_term
from .v1 import nodex_pb2 as pb
from .v1 import nodex_pb2_grpc as pb_grpc

__all__ = [
    "Gateway", "NodexError", "BadRpc", "CnodeInfo", "NodeInfo", "Event", "StreamMessage", "Stream",
]

T = TypeVar("T")


class NodexError(Exception):
    """A failed gRPC call: ``code`` is the ``grpc.StatusCode`` (``None`` for BadRpc), ``code_name``
    its name ("DEADLINE_EXCEEDED"), ``message`` the server's explanation."""

    def __init__(self, code: Optional[grpc.StatusCode], message: str) -> None:
        self.code = code
        self.code_name = code.name if code is not None else "BADRPC"
        self.message = message
        super().__init__(f"{self.code_name}: {message}")

    @classmethod
    def from_rpc_error(cls, e: grpc.RpcError) -> "NodexError":
        code = e.code() if hasattr(e, "code") else grpc.StatusCode.UNKNOWN
        details = e.details() if hasattr(e, "details") else str(e)
        return cls(code, details or "")


class BadRpc(NodexError):
    """``rpc`` answered ``{badrpc, Reason}``: ``reason`` is the decoded Reason term."""

    def __init__(self, reason: Term) -> None:
        self.reason = reason
        super().__init__(None, repr(reason))


def _state(s: int) -> str:
    return pb.State.Name(s).lower() if s else "unspecified"


@dataclass(frozen=True)
class CnodeInfo:
    """One C-node's state, as GET /cnodes/{name} shows it (``state`` lower-case: "up", ...)."""

    name: str
    state: str
    node: str
    os_pid: int
    restarts: int
    last_exit: str
    last_error: str
    in_flight: int
    uptime_ms: int
    calls_total: int
    dropped_messages: int
    direction: str
    protocol: str

    @classmethod
    def _from_pb(cls, m: pb.CnodeInfo) -> "CnodeInfo":
        return cls(m.name, _state(m.state), m.node, m.os_pid, m.restarts, m.last_exit,
                   m.last_error, m.in_flight, m.uptime_ms, m.calls_total, m.dropped_messages,
                   m.direction, m.protocol)


@dataclass(frozen=True)
class NodeInfo:
    """One Erlang node of the cluster; ``child`` ones are started and supervised by nodexd."""

    node: str
    connected: bool
    child: bool
    state: str
    os_pid: int
    restarts: int

    @classmethod
    def _from_pb(cls, m: pb.NodeInfo) -> "NodeInfo":
        return cls(m.node, m.connected, m.child, _state(m.state), m.os_pid, m.restarts)


@dataclass(frozen=True)
class Event:
    """A lifecycle event; ``kind`` is "cnode" or "erlang_node"."""

    seq: int
    time_ms: int
    kind: str
    name: str
    node: str
    state: str
    reason: str
    os_pid: int

    @classmethod
    def _from_pb(cls, m: pb.Event) -> "Event":
        return cls(m.seq, m.time_ms, pb.Event.Kind.Name(m.kind).lower(), m.name, m.node,
                   _state(m.state), m.reason, m.os_pid)


@dataclass(frozen=True)
class StreamMessage:
    """A message that reached a streaming call's pid; ``final`` marks the reply (the last one)."""

    message: Term
    final: bool


class Stream(Generic[T]):
    """A server stream: iterate it (blocking); ``cancel()`` ends it from any thread. Iteration
    raises NodexError on failure (not after cancel(): iteration then just stops). Also a context
    manager that cancels on exit."""

    def __init__(self, call: Any, convert: Callable[[Any], T]) -> None:
        self._call = call
        self._convert = convert
        self._cancelled = False

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        try:
            return self._convert(next(self._call))
        except grpc.RpcError as e:
            if self._cancelled and e.code() == grpc.StatusCode.CANCELLED:
                raise StopIteration from None
            raise NodexError.from_rpc_error(e) from None

    def cancel(self) -> None:
        self._cancelled = True
        self._call.cancel()

    def __enter__(self) -> "Stream[T]":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.cancel()


def _read(path: Optional[str]) -> Optional[bytes]:
    if path is None:
        return None
    with open(path, "rb") as f:
        return f.read()


def _token(token: Optional[str], token_file: Optional[str],
           token_env: Optional[str]) -> Optional[str]:
    """The bearer token: given, the first line of a file, or an environment variable."""
    if token is None and token_file is not None:
        with open(token_file) as f:
            token = f.readline().strip()
    if token is None and token_env is not None:
        token = os.environ.get(token_env) or None
    if token is not None and (not token or any(c.isspace() for c in token)):
        raise ValueError("a bearer token is one non-empty word")
    return token


class Gateway:
    """A connection to nodexd's gRPC API. ``timeout`` arguments are seconds (``None``: for calls,
    the C-node's ``call_timeout_ms``; for the other methods no deadline). Thread-safe; close() it
    or use it as a context manager."""

    def __init__(self, target: str = "localhost:50051",
                 options: Optional[Sequence[Tuple[str, Any]]] = None,
                 channel: Optional[grpc.Channel] = None, *, tls: bool = False,
                 ca_file: Optional[str] = None, cert_file: Optional[str] = None,
                 key_file: Optional[str] = None, token: Optional[str] = None,
                 token_file: Optional[str] = None, token_env: Optional[str] = None) -> None:
        """TLS (``grpc.tls`` on the server) when ``tls`` or any of ``ca_file`` (PEM CAs to
        verify nodexd with; default: the system's), ``cert_file`` + ``key_file`` (a client
        certificate, for mTLS) is given. A bearer token (sent as ``authorization: Bearer T``
        metadata on every call) comes from ``token``, the first line of ``token_file``, or the
        environment variable ``token_env``."""
        self.target = target
        opts = list(options or [])
        if (cert_file is None) != (key_file is None):
            raise ValueError("cert_file and key_file go together")
        if channel is None and (tls or ca_file or cert_file):
            creds = grpc.ssl_channel_credentials(_read(ca_file), _read(key_file), _read(cert_file))
            channel = grpc.secure_channel(target, creds, options=opts)
        self._channel = channel or grpc.insecure_channel(target, options=opts)
        self._stub = pb_grpc.GatewayStub(self._channel)
        token = _token(token, token_file, token_env)
        self._md = (("authorization", f"Bearer {token}"),) if token else None

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Gateway":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _unary(self, method: str, request: Any, timeout: Optional[float]) -> Any:
        try:
            return getattr(self._stub, method)(request, timeout=timeout, metadata=self._md)
        except grpc.RpcError as e:
            raise NodexError.from_rpc_error(e) from None

    # --- C-nodes ----------------------------------------------------------------------------
    def call(self, cnode: str, request: Term, timeout: Optional[float] = None,
             as_etf: bool = False) -> Term:
        """Sends ``request`` to the C-node and returns its reply (``Etf`` bytes with as_etf).
        Pass ``Etf(term_to_binary_bytes)`` to send a request as raw ETF."""
        req = pb.CallRequest(cnode=cnode, request=to_payload(request), reply_as_etf=as_etf)
        return from_payload(self._unary("Call", req, timeout).reply)

    def call_stream(self, cnode: str, request: Term, timeout: Optional[float] = None,
                    as_etf: bool = False) -> Stream[StreamMessage]:
        """Like call, but yields every message reaching the call's pid, the reply last."""
        req = pb.CallRequest(cnode=cnode, request=to_payload(request), reply_as_etf=as_etf)
        try:
            call = self._stub.CallStream(req, timeout=timeout, metadata=self._md)
        except grpc.RpcError as e:
            raise NodexError.from_rpc_error(e) from None
        return Stream(call, lambda m: StreamMessage(from_payload(m.message), m.final))

    def cast(self, cnode: str, message: Term, timeout: Optional[float] = None) -> None:
        """Sends ``message`` to the C-node without waiting for any answer from it."""
        self._unary("Cast", pb.CastRequest(cnode=cnode, message=to_payload(message)), timeout)

    def list_cnodes(self, timeout: Optional[float] = None) -> List[CnodeInfo]:
        reply = self._unary("ListCnodes", pb.ListCnodesRequest(), timeout)
        return [CnodeInfo._from_pb(c) for c in reply.cnodes]

    def get_cnode(self, name: str, timeout: Optional[float] = None) -> CnodeInfo:
        return CnodeInfo._from_pb(self._unary("GetCnode", pb.GetCnodeRequest(name=name), timeout))

    def watch(self, include_current: bool = False,
              timeout: Optional[float] = None) -> Stream[Event]:
        """Lifecycle events of C-nodes and Erlang nodes, as they happen, until cancelled."""
        try:
            call = self._stub.Watch(pb.WatchRequest(include_current=include_current),
                                    timeout=timeout, metadata=self._md)
        except grpc.RpcError as e:
            raise NodexError.from_rpc_error(e) from None
        return Stream(call, Event._from_pb)

    # --- Erlang nodes -----------------------------------------------------------------------
    def rpc(self, node: str, module: str, function: str, args: Sequence[Term] = (),
            timeout: Optional[float] = None, as_etf: bool = False) -> Term:
        """``rpc:call(Node, Module, Function, Args)``; raises BadRpc on ``{badrpc, Reason}``.
        ``args`` is a sequence of terms (or ``Etf`` bytes of the whole list)."""
        if isinstance(args, Etf):
            payload = to_payload(args)
        else:
            payload = pb.Payload(term=to_term(list(args)))
        req = pb.RpcRequest(node=node, module=module, function=function, args=payload,
                            reply_as_etf=as_etf)
        reply = self._unary("Rpc", req, timeout)
        if reply.WhichOneof("outcome") == "badrpc":
            raise BadRpc(from_payload(reply.badrpc))
        return from_payload(reply.result)

    def list_nodes(self, timeout: Optional[float] = None) -> List[NodeInfo]:
        reply = self._unary("ListNodes", pb.ListNodesRequest(), timeout)
        return [NodeInfo._from_pb(n) for n in reply.nodes]

    def spawn_nodes(self, count: int = 1, timeout: Optional[float] = None) -> List[str]:
        """Starts ``count`` child Erlang nodes; returns their names once up and connected."""
        return list(self._unary("SpawnNodes", pb.SpawnNodesRequest(count=count), timeout).nodes)

    def stop_node(self, node: str, timeout: Optional[float] = None) -> None:
        self._unary("StopNode", pb.StopNodeRequest(node=node), timeout)

    def load_module(self, node: str, module: str, beam: bytes,
                    timeout: Optional[float] = None) -> None:
        """Loads a compiled module (the .beam file's bytes) on ``node``."""
        self._unary("LoadModule", pb.LoadModuleRequest(node=node, module=module, beam=beam),
                    timeout)

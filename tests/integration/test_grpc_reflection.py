"""test_grpc_reflection: gRPC server reflection (grpc.reflection.v1 and v1alpha) on nodexd, with
Debian's python3-grpcio as a grpcurl would use it: list the services, describe nodex.v1.Gateway
from the descriptors nodexd sends (the same protoc makes of proto/), call a method built from
them alone, unknown names and extension requests, and the token rule."""

import os
import subprocess
import tempfile

import pytest

import nodex_harness as nx
from test_auth import token_file
from test_grpc_server import GrpcNodexd, status_of

grpc = pytest.importorskip("grpc")
import grpc_std as std  # noqa: E402
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory  # noqa: E402

S = grpc.StatusCode
VERSIONS = ["v1", "v1alpha"]
SERVICES = {"nodex.v1.Gateway", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection"}


@pytest.fixture(scope="module")
def gw(session):
    d = GrpcNodexd(session, [nx.test_cnode_spec("t")])
    d.start()
    d.wait_up("t")
    yield d
    d.close()


def protoc_files(*names):
    """FileDescriptorProtos protoc makes here of proto/ and grpc-proto, by name."""
    with tempfile.TemporaryDirectory(prefix="nodex-refl-") as out:
        path = os.path.join(out, "set.pb")
        subprocess.run(["protoc", f"--descriptor_set_out={path}", "--include_imports",
                        f"-I{nx.REPO_DIR}/proto", f"-I{std.GRPC_PROTO_DIR}", *names], check=True)
        with open(path, "rb") as f:
            fds = descriptor_pb2.FileDescriptorSet.FromString(f.read())
    return {f.name: f for f in fds.file}


def files_of(response):
    assert response.WhichOneof("message_response") == "file_descriptor_response", response
    return [descriptor_pb2.FileDescriptorProto.FromString(b)
            for b in response.file_descriptor_response.file_descriptor_proto]


@pytest.mark.parametrize("version", VERSIONS)
def test_list_services_names_every_service(gw, version):
    r = std.Reflection(gw.channel, version)
    (resp,) = r.ask(r.Request(host="h", list_services=""), timeout=30)
    assert {s.name for s in resp.list_services_response.service} == SERVICES
    assert resp.valid_host == "h"
    assert resp.original_request.list_services == ""


@pytest.mark.parametrize("version", VERSIONS)
def test_describe_the_gateway_is_what_protoc_makes_of_the_proto(gw, version):
    r = std.Reflection(gw.channel, version)
    (resp,) = r.ask(r.Request(file_containing_symbol="nodex.v1.Gateway"), timeout=30)
    (fd,) = files_of(resp)
    assert fd.name == "nodex/v1/nodex.proto" and fd.package == "nodex.v1"
    assert fd == protoc_files("nodex/v1/nodex.proto")["nodex/v1/nodex.proto"]
    (svc,) = fd.service
    assert svc.name == "Gateway"
    methods = {m.name: m for m in svc.method}
    assert {"Call", "CallStream", "Cast", "ListCnodes", "GetCnode", "Watch", "Rpc", "Health",
            "RestartCnode", "LoadModule"} <= set(methods)
    assert methods["Call"].input_type == ".nodex.v1.CallRequest"
    assert methods["Watch"].server_streaming and not methods["Watch"].client_streaming


@pytest.mark.parametrize("version", VERSIONS)
def test_the_standard_services_describe_themselves(gw, version):
    r = std.Reflection(gw.channel, version)
    want = protoc_files(*std.FILES)
    for symbol, name in [("grpc.health.v1.Health", "grpc/health/v1/health.proto"),
                         ("grpc.reflection.v1.ServerReflection.ServerReflectionInfo",
                          "grpc/reflection/v1/reflection.proto"),
                         ("grpc.reflection.v1alpha.ServerReflectionRequest",
                          "grpc/reflection/v1alpha/reflection.proto")]:
        (resp,) = r.ask(r.Request(file_containing_symbol=symbol), timeout=30)
        (fd,) = files_of(resp)
        assert fd == want[name], symbol
        (resp,) = r.ask(r.Request(file_by_filename=name), timeout=30)
        assert files_of(resp) == [want[name]]


def test_a_method_called_from_the_reflected_descriptors_alone(gw):
    """What grpcurl does without the proto: descriptors from reflection, then a call."""
    r = std.Reflection(gw.channel, "v1")
    (resp,) = r.ask(r.Request(file_containing_symbol="nodex.v1.Gateway.GetCnode"), timeout=30)
    pool = descriptor_pool.DescriptorPool()
    for fd in files_of(resp):
        pool.Add(fd)
    method = pool.FindServiceByName("nodex.v1.Gateway").FindMethodByName("GetCnode")
    factory = message_factory.MessageFactory(pool)
    req_cls = factory.GetPrototype(method.input_type)
    reply_cls = factory.GetPrototype(method.output_type)
    get = gw.channel.unary_unary("/nodex.v1.Gateway/GetCnode",
                                 request_serializer=req_cls.SerializeToString,
                                 response_deserializer=reply_cls.FromString)
    info = get(req_cls(name="t"), timeout=30)
    assert info.name == "t" and info.os_pid > 0
    assert pool.FindEnumTypeByName("nodex.v1.State").values_by_number[info.state].name == "UP"


@pytest.mark.parametrize("version", VERSIONS)
def test_unknown_names_and_extensions_are_not_found_on_a_stream_that_goes_on(gw, version):
    r = std.Reflection(gw.channel, version)
    requests = [r.Request(file_containing_symbol="nodex.v1.Nope"),
                r.Request(file_by_filename="nope.proto"),
                r.Request(file_containing_extension=r.ExtensionRequest(
                    containing_type="nodex.v1.Term", extension_number=100)),
                r.Request(all_extension_numbers_of_type="nodex.v1.Term"),
                r.Request(list_services="")]
    responses = r.ask(*requests, timeout=30)
    assert len(responses) == len(requests)
    for req, resp in zip(requests[:4], responses[:4]):
        assert resp.WhichOneof("message_response") == "error_response", resp
        assert resp.error_response.error_code == S.NOT_FOUND.value[0], resp
        assert resp.original_request == req
    assert "nodex.v1.Nope" in responses[0].error_response.error_message
    assert len(responses[4].list_services_response.service) == len(SERVICES)  # still answering


def test_many_requests_on_one_stream_are_answered_in_order(gw):
    r = std.Reflection(gw.channel, "v1")
    symbols = ["nodex.v1.Gateway", "grpc.health.v1.Health", "nodex.v1.Nope"] * 50
    responses = r.ask(*[r.Request(file_containing_symbol=s) for s in symbols], timeout=60)
    assert [x.original_request.file_containing_symbol for x in responses] == symbols


def test_a_cancelled_stream_leaves_the_server_serving(gw):
    r = std.Reflection(gw.channel, "v1")

    def forever():
        while True:
            yield r.Request(list_services="")
    call = r.ServerReflectionInfo(forever(), timeout=60)
    assert next(call).list_services_response.service
    call.cancel()
    (resp,) = r.ask(r.Request(list_services=""), timeout=30)
    assert len(resp.list_services_response.service) == len(SERVICES)


def test_reflection_needs_a_token_but_no_permission(session):
    path, token = token_file(session, "caller")
    d = GrpcNodexd(session, [nx.test_cnode_spec("t")],
                   extra={"auth": {"principals": [{"name": "caller", "token_file": path,
                                                   "allow": ["call:t"]}]}})
    d.token = token
    try:
        d.start()
        d.wait_up("t")
        for version in VERSIONS:
            r = std.Reflection(d.channel, version)
            code, msg = status_of(r.ask, r.Request(list_services=""), timeout=30)
            assert code == S.UNAUTHENTICATED and "Bearer" in msg, (version, code, msg)
            (resp,) = r.ask(r.Request(list_services=""), timeout=30,
                            metadata=(("authorization", f"Bearer {token}"),))
            assert {s.name for s in resp.list_services_response.service} == SERVICES
    finally:
        d.close()

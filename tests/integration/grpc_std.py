"""grpc_std: Python messages of the standard gRPC services nodexd serves (grpc.health.v1,
grpc.reflection.v1 and v1alpha), built from Debian's grpc-proto files at test time. Generated
*_pb2 modules would live under a package named grpc, which the grpcio package shadows: the
messages come from a descriptor set instead, and calls use grpcio's generic stubs."""

import os
import subprocess
import tempfile

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

GRPC_PROTO_DIR = "/usr/share/grpc-proto"  # Debian's grpc-proto package
FILES = ["grpc/health/v1/health.proto", "grpc/reflection/v1/reflection.proto",
         "grpc/reflection/v1alpha/reflection.proto"]


def _pool():
    with tempfile.TemporaryDirectory(prefix="nodex-std-") as out:
        path = os.path.join(out, "std.pb")
        subprocess.run(["protoc", f"--descriptor_set_out={path}", "--include_imports",
                        f"-I{GRPC_PROTO_DIR}", *FILES], check=True)
        with open(path, "rb") as f:
            fds = descriptor_pb2.FileDescriptorSet.FromString(f.read())
    pool = descriptor_pool.DescriptorPool()
    for fd in fds.file:
        pool.Add(fd)
    return pool


POOL = _pool()
_FACTORY = message_factory.MessageFactory(POOL)


def message(full_name):
    """The message class of `full_name` ("grpc.health.v1.HealthCheckRequest")."""
    return _FACTORY.GetPrototype(POOL.FindMessageTypeByName(full_name))


HealthCheckRequest = message("grpc.health.v1.HealthCheckRequest")
HealthCheckResponse = message("grpc.health.v1.HealthCheckResponse")
SERVING = HealthCheckResponse.SERVING
NOT_SERVING = HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = HealthCheckResponse.SERVICE_UNKNOWN


def status_name(status):
    return HealthCheckResponse.ServingStatus.Name(status)


class Health:
    """grpc.health.v1.Health on `channel`."""

    def __init__(self, channel):
        self.Check = channel.unary_unary(
            "/grpc.health.v1.Health/Check", request_serializer=HealthCheckRequest.SerializeToString,
            response_deserializer=HealthCheckResponse.FromString)
        self.Watch = channel.unary_stream(
            "/grpc.health.v1.Health/Watch", request_serializer=HealthCheckRequest.SerializeToString,
            response_deserializer=HealthCheckResponse.FromString)


class Reflection:
    """grpc.reflection.<version>.ServerReflection on `channel` ("v1" or "v1alpha")."""

    def __init__(self, channel, version="v1"):
        pkg = f"grpc.reflection.{version}"
        self.Request = message(f"{pkg}.ServerReflectionRequest")
        self.Response = message(f"{pkg}.ServerReflectionResponse")
        self.ExtensionRequest = message(f"{pkg}.ExtensionRequest")
        self.ServerReflectionInfo = channel.stream_stream(
            f"/{pkg}.ServerReflection/ServerReflectionInfo",
            request_serializer=self.Request.SerializeToString,
            response_deserializer=self.Response.FromString)

    def ask(self, *requests, **kw):
        """Sends `requests` on one stream; returns the responses (one per request)."""
        return list(self.ServerReflectionInfo(iter(requests), **kw))

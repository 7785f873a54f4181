#!/usr/bin/env bash
# Generates the Python protobuf + gRPC stubs of proto/nodex/v1/nodex.proto into src/nodex/v1/ (or $1).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
proto_dir="$(cd "$here/../../proto" && pwd)"
out="${1:-$here/src}"
plugin="$(command -v grpc_python_plugin || echo /usr/bin/grpc_python_plugin)"
for tool in protoc "$plugin"; do
  command -v "$tool" >/dev/null || {
    echo "gen_stubs: $tool not found (apt-get install protobuf-compiler protobuf-compiler-grpc)" >&2
    exit 1
  }
done
# Generate into a private dir, then move into place: concurrent runs never see half-written files.
tmp="$(mktemp -d "${out%/}/.gen_stubs.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
protoc -I "$proto_dir" --python_out="$tmp" --grpc_python_out="$tmp" \
  --plugin=protoc-gen-grpc_python="$plugin" "$proto_dir/nodex/v1/nodex.proto"
echo '"""Generated gRPC stubs of nodex/v1/nodex.proto (gen_stubs.sh; not committed)."""' \
  >"$tmp/nodex/v1/__init__.py"
mkdir -p "$out/nodex/v1"
for f in __init__.py nodex_pb2.py nodex_pb2_grpc.py; do
  mv -f "$tmp/nodex/v1/$f" "$out/nodex/v1/$f"
done

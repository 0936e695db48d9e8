#!/bin/sh
# Regenerate the Python stubs next to the .proto files (needs grpcio-tools).
#
# protoc runs from the repository root with the root as include path, so the
# generated modules import each other as `reconciler.demo.examples.plugins.proto.X`
# and register unique file names in protobuf's global descriptor pool.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../../../.." && pwd)
cd "$root"
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
rel=reconciler/demo/examples/plugins/proto
rm -f "$rel"/*_pb2.py "$rel"/*_pb2.pyi "$rel"/*_pb2_grpc.py
"$PYTHON" -m grpc_tools.protoc -I . \
    --python_out=. --pyi_out=. --grpc_python_out=. \
    "$rel"/backend.proto "$rel"/version.proto "$rel"/database.proto \
    "$rel"/grpc_broker.proto "$rel"/grpc_controller.proto "$rel"/grpc_stdio.proto
echo "regenerated: $(cd "$rel" && ls ./*_pb2*.py* | tr '\n' ' ')"

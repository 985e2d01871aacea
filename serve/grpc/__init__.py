"""gRPC transport: generated code, protobuf <-> domain conversion, servicers and the server.

protoc generates imports relative to `protos/` (`from clf.v1 import clf_pb2`), so the generated
tree is put on the import path here, once, before anything imports it.
"""

import sys
from pathlib import Path

_GENERATED = str(Path(__file__).resolve().parent / "_proto")
if _GENERATED not in sys.path:  # pragma: no branch - only this line adds it, once per process
    sys.path.append(_GENERATED)

from clf.v1 import clf_pb2, clf_pb2_grpc  # noqa: E402  (needs the path above)
from inference import grpc_service_pb2, grpc_service_pb2_grpc  # noqa: E402

__all__ = ["clf_pb2", "clf_pb2_grpc", "grpc_service_pb2", "grpc_service_pb2_grpc"]

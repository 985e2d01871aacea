"""gRPC transport: generated code, protobuf <-> domain conversion, servicers and the server."""

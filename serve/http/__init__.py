"""The REST port (`--rest-port`): KServe v2 REST, TensorFlow Serving REST and plain image upload
over the same data plane as the gRPC port (docs/http.md)."""

from serve.http.app import HTTP_STATUS, HttpServer

__all__ = ["HTTP_STATUS", "HttpServer"]

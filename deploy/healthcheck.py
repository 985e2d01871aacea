#!/usr/bin/env python3
"""Exit 0 if clfserve's gRPC health service answers SERVING, else 1 (Docker HEALTHCHECK).

    clfserve-healthcheck [host:port] [service]   # default 127.0.0.1:$CLFSERVE_PORT (8500), ""

The empty service is the overall status (SERVING once the repository has loaded); a model name
checks that model. Plaintext only: behind TLS, probe the REST port's /v2/health/ready instead.
"""

from __future__ import annotations

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def main(argv: list[str]) -> int:
    target = argv[0] if argv else f"127.0.0.1:{os.environ.get('CLFSERVE_PORT', '8500')}"
    service = argv[1] if len(argv) > 1 else ""
    try:
        with grpc.insecure_channel(target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            answer = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=4)
    except grpc.RpcError as exc:
        print(f"{target}: {exc.code().name}", file=sys.stderr)  # type: ignore[attr-defined]
        return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
    print(f"{target} {service or '(overall)'}: {status}")
    return 0 if answer.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

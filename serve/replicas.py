"""Client side of serving replicas: a target naming several clfserve processes becomes one gRPC
channel that spreads calls over the healthy ones.

    channel_target("10.0.0.5:8500,10.0.0.6:8500")  # -> ("ipv4:10.0.0.5:8500,10.0.0.6:8500", True)
    channel_target("dns:///clfserve-headless:8500")  # -> (unchanged, True): every A record
    channel_target("localhost:8500")                 # -> (unchanged, False): one server

A balanced target gets `SERVICE_CONFIG`: gRPC's `round_robin` policy over every address, with
client-side health checking on the overall health service ("" service name), so a replica
that reports NOT_SERVING (loading, or draining after SIGTERM) or whose connection breaks stops
being picked; and a bounded retry on UNAVAILABLE (and on the CANCELLED a draining replica gives
the calls it had not started) for the read-only, side-effect-free calls (classify, infer, model
metadata), so a call cut by a replica dying is sent again elsewhere.

Limitation: gRPC's health checker sends no call metadata, so servers started with
`--auth-health` (health behind the token) never look healthy to a balanced client.
"""

from __future__ import annotations

import ipaddress
import json
import socket

from serve.digits import ascii_digits

__all__ = ["RETRY_ATTEMPTS", "SERVICE_CONFIG", "channel_options", "channel_target"]

RETRY_ATTEMPTS = 3  # the first try and two retries, on other replicas when there are some
_IDEMPOTENT = {  # every method here only reads: sending it twice changes nothing
    "clf.v1.ClassificationService": ("Classify", "ListModels", "GetModel"),
    "inference.GRPCInferenceService": ("ModelInfer", "ModelMetadata", "ModelReady"),
    "tensorflow.serving.PredictionService": ("Predict", "Classify", "GetModelMetadata"),
}
SERVICE_CONFIG = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "healthCheckConfig": {"serviceName": ""},
    "methodConfig": [
        {
            "name": [
                {"service": service, "method": method}
                for service, methods in _IDEMPOTENT.items()
                for method in methods
            ],
            "retryPolicy": {
                "maxAttempts": RETRY_ATTEMPTS,
                "initialBackoff": "0.05s",
                "maxBackoff": "0.5s",
                "backoffMultiplier": 2,
                # CANCELLED too: a replica shutting down cancels the calls it received but had
                # not yet handed to a handler (grpc/grpc#41785), and a client-side cancel is
                # never retried, so only those come back
                "retryableStatusCodes": ["UNAVAILABLE", "CANCELLED"],
            },
        }
    ],
}
_SCHEMES = ("dns:", "ipv4:", "ipv6:")


def channel_target(target: str) -> tuple[str, bool]:
    """The gRPC target for `target` and whether it names replicas to balance over.

    `host:port,host:port,...`: IP literals are used as they are, names are resolved once, now
    (for a name that follows DNS changes, give `dns:///name:port`). Raises ValueError for an
    address without a port, a name that does not resolve, or a mix of IPv4 and IPv6 replicas.
    """
    target = target.strip()
    if target.startswith(_SCHEMES):
        return target, True
    if "," not in target:
        return target, False
    addresses = [_address(part.strip()) for part in target.split(",") if part.strip()]
    families = {family for family, _ in addresses}
    if len(families) != 1:
        raise ValueError(f"{target!r}: give replicas of one address family (IPv4 or IPv6)")
    family = families.pop()
    return f"{family}:" + ",".join(address for _, address in addresses), True


def channel_options(target: str, balanced: bool, message_limit: int) -> list[tuple[str, object]]:
    """Channel arguments for a balanced target: the service config, retries, their buffer."""
    if not balanced:
        return []
    options: list[tuple[str, object]] = [
        ("grpc.service_config", json.dumps(SERVICE_CONFIG)),
        ("grpc.enable_retries", 1),
        # A retry resends the request: keep requests up to the message limit to resend.
        ("grpc.per_rpc_retry_buffer_size", message_limit),
    ]
    if not target.startswith(_SCHEMES):  # TLS checks the first host's name on every replica
        options.append(("grpc.default_authority", target.split(",")[0].strip()))
    return options


def _address(part: str) -> tuple[str, str]:
    """`host:port` -> ("ipv4" or "ipv6", the address as the scheme spells it)."""
    host, sep, port = part.rpartition(":")
    if not sep or not host or not ascii_digits(port):
        raise ValueError(f"{part!r}: give each replica as HOST:PORT")
    host = host.removeprefix("[").removesuffix("]")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        try:  # a name: its first address (IPv4 first when it has one)
            found = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise ValueError(f"{part!r}: cannot resolve {host!r} ({exc})") from None
        ips = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in found]
        ip = min(ips, key=lambda candidate: candidate.version)
    if ip.version == 4:
        return "ipv4", f"{ip}:{port}"
    return "ipv6", f"[{ip}]:{port}"

"""The two servers clfserve is measured against, each run in its own process.

    python scripts/bench_serve.py --baseline echo  PORT_FILE mnist=trained/mnist/1 ...
    python scripts/bench_serve.py --baseline naive PORT_FILE mnist=trained/mnist/1 ...

`echo`: a bare `grpc.aio` server answering KServe v2 `ModelInfer` with a ready-made response of
the right shape and no model: the floor of what any Python gRPC server can do.
`naive`: what a user writes in an afternoon: a sync grpcio server on a thread pool calling the
SavedModel's serving signature once per request.
"""

from __future__ import annotations

import asyncio
import json
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np

from serve.grpc import grpc_service_pb2 as pb
from serve.grpc import grpc_service_pb2_grpc


def _signature(version_dir: Path) -> tuple[str, str, int]:
    manifest = json.loads((version_dir / "manifest.json").read_text())
    signature = manifest["signature"]
    return signature["input"], signature["output"], len(manifest["classes"])


def _response(name: str, output: str, probabilities: np.ndarray) -> pb.ModelInferResponse:
    response = pb.ModelInferResponse(model_name=name, model_version="1")
    response.outputs.add(name=output, datatype="FP32", shape=probabilities.shape)
    response.raw_output_contents.append(probabilities.astype("<f4").tobytes())
    return response


async def echo(port_file: Path, models: dict[str, Path]) -> None:
    """Answer every ModelInfer with uniform probabilities; no model, no batching."""
    specs = {name: _signature(path) for name, path in models.items()}
    cache: dict[tuple[str, int], bytes] = {}

    async def infer(raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        request = pb.ModelInferRequest.FromString(raw)
        name, rows = request.model_name, int(request.inputs[0].shape[0])
        if (name, rows) not in cache:
            _, output, classes = specs[name]
            uniform = np.full((rows, classes), 1.0 / classes, np.float32)
            cache[name, rows] = _response(name, output, uniform).SerializeToString()
        return cache[name, rows]

    handler = grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService",
        {"ModelInfer": grpc.unary_unary_rpc_method_handler(infer)},
    )
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 << 20)])
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    port_file.write_text(str(port))
    await server.wait_for_termination()


def naive(port_file: Path, models: dict[str, Path]) -> None:
    """One SavedModel signature call per request, on grpcio's sync thread-pool server."""
    import tensorflow as tf

    loaded = {}
    for name, path in models.items():
        model = tf.saved_model.load(str(path))
        loaded[name] = (model, model.signatures["serving_default"], *_signature(path))

    class Servicer(grpc_service_pb2_grpc.GRPCInferenceServiceServicer):
        def ModelInfer(self, request, context):
            _, signature, input_name, output, _ = loaded[request.model_name]
            shape = list(request.inputs[0].shape)
            batch = np.frombuffer(request.raw_input_contents[0], np.float32).reshape(shape)
            probabilities = signature(**{input_name: tf.constant(batch)})[output].numpy()
            return _response(request.model_name, output, probabilities)

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=16),
        options=[("grpc.max_receive_message_length", 64 << 20)],
    )
    grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    port_file.write_text(str(port))
    server.wait_for_termination()


def run(kind: str, port_file: Path, models: dict[str, Path]) -> None:
    if kind == "echo":
        asyncio.run(echo(port_file, models))
    else:
        naive(port_file, models)

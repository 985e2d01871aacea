"""v2 model metadata: the model's tensors as the Open Inference Protocol describes them (the FP32
model input, the BYTES input for encoded images, the probabilities and, where the version has
one, the embedding), shared by the gRPC and REST front doors."""

from __future__ import annotations

from inference import grpc_service_pb2 as pb  # generated; serve/grpc/__init__ puts it on the path

from serve.dataplane import EMBEDDING
from serve.grpc.kserve_convert import encoded_input
from serve.manifest import Manifest
from serve.versions import ModelInfo, VersionState

PLATFORM = "tensorflow_savedmodel"


def metadata_response(info: ModelInfo, manifest: Manifest) -> pb.ModelMetadataResponse:
    """Inputs and outputs with -1 for the batch dimension; versions that are available."""
    sig = manifest.signature
    Tensor = pb.ModelMetadataResponse.TensorMetadata
    return pb.ModelMetadataResponse(
        name=info.name,
        versions=[str(v.version) for v in info.versions if v.state is VersionState.AVAILABLE],
        platform=PLATFORM,
        inputs=[
            Tensor(name=sig.input, datatype="FP32", shape=[-1, *manifest.input_shape]),
            Tensor(name=encoded_input(sig), datatype="BYTES", shape=[-1]),
        ],
        outputs=[
            Tensor(name=sig.output, datatype="FP32", shape=[-1, len(manifest.classes)]),
            *(
                [Tensor(name=EMBEDDING, datatype="FP32", shape=[-1, manifest.embedding.dimension])]
                if manifest.embedding is not None
                else []
            ),
        ],
    )

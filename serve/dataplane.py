"""The protocol-independent core every API on the port calls: classify, list and describe models.

Domain types in, domain types out (protobuf stops at `serve/grpc/convert.py`). A request pins one
version through a registry handle, is checked and preprocessed in the request path (decode and
resize never run on the batcher), then waits for one batched model call. Request metrics are
recorded here so every protocol counts alike.

    plane = DataPlane(settings, metrics)
    await plane.start()
    result = await plane.classify(ClassifyRequest("mnist", [ImageInput(png_bytes)]))
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import numpy as np

from serve.batching import Batcher, WorkerPool
from serve.errors import InvalidInput, ModelNotFound, VersionNotFound
from serve.loader import Classifier, load
from serve.manifest import Manifest, Preprocessing
from serve.metrics import ServeMetrics
from serve.preprocess import check_model_input, preprocess_bytes, preprocess_pixels
from serve.registry import Loader, ModelInfo, ModelRegistry
from serve.settings import Settings

log = logging.getLogger(__name__)
# A lone small image on an idle version is decoded on the event loop (a thread hop costs more
# than the decode); anything else goes to the decode threads, so the loop stays free for RPCs.
_INLINE_BYTES = 16 * 1024
_ERROR_CODES = {  # canonical status names for metrics; serve/grpc/status.py maps to gRPC
    "ModelNotFound": "NOT_FOUND",
    "VersionNotFound": "NOT_FOUND",
    "ModelNotReady": "UNAVAILABLE",
    "InvalidInput": "INVALID_ARGUMENT",
    "ResourceExhausted": "RESOURCE_EXHAUSTED",
    "TimeoutError": "DEADLINE_EXCEEDED",
    "CancelledError": "CANCELLED",
}


@dataclass(frozen=True)
class ImageInput:
    """Encoded image bytes; the model's manifest preprocessing is applied."""

    data: bytes


@dataclass(frozen=True)
class TensorInput:
    """An array: raw pixels (0..255, HxW[xC]) or, if `preprocessed`, the model input (HxWxC)."""

    array: np.ndarray
    preprocessed: bool = False


Input = ImageInput | TensorInput


@dataclass(frozen=True)
class ClassifyRequest:
    model: str
    inputs: Sequence[Input]
    version: int | None = None
    label: str | None = None
    top_k: int = 1


@dataclass(frozen=True)
class ClassifyResult:
    model: str
    version: int
    labels: tuple[str, ...]
    probabilities: np.ndarray  # float32 [inputs, classes], manifest class order
    top_k: list[list[tuple[str, float]]]  # per input, best first


def top_k(
    probabilities: np.ndarray, labels: Sequence[str], k: int
) -> list[list[tuple[str, float]]]:
    """The `k` best (label, score) pairs of each row, best first (ties: manifest order)."""
    k = max(1, min(k, len(labels)))
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return [
        [(labels[i], float(row[i])) for i in idx]
        for row, idx in zip(probabilities, order, strict=True)
    ]


def error_code(exc: BaseException) -> str:
    """The canonical status name a failed request is counted under."""
    return _ERROR_CODES.get(type(exc).__name__, "INTERNAL")


class DataPlane:
    """Classification over a `ModelRegistry` with one `Batcher` per loaded version."""

    def __init__(
        self,
        settings: Settings,
        metrics: ServeMetrics | None = None,
        *,
        loader: Loader = load,
        on_change: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or ServeMetrics()
        self._on_change = on_change
        self._decoders = WorkerPool("decode", settings.decode_threads)
        self.registry = ModelRegistry(
            settings.repository, settings.policy, self._make_batcher, loader=loader,
            on_change=self._changed,
        )  # fmt: skip

    def _make_batcher(self, name: str, version: int, classifier: Classifier) -> Batcher:
        batch_size = self.metrics.batch_size.labels(name, str(version))
        depth = self.metrics.queue_depth.labels(name, str(version))

        def observe(images: int, queued: int) -> None:
            batch_size.observe(images)
            depth.set(queued)

        return Batcher(
            classifier.predict,
            max_batch_size=self.settings.max_batch_size,
            timeout=self.settings.batch_timeout_ms / 1000.0,
            queue_bound=self.settings.queue_bound,
            name=f"{name}-v{version}",
            observe=observe,
        )

    async def _changed(self) -> None:
        for name, count in self.registry.loaded_counts().items():
            self.metrics.loaded_versions.labels(name).set(count)
        if self._on_change is not None:
            await self._on_change()

    async def start(self) -> None:
        """Load every model of the repository (warming each version) by the version policy."""
        await self.registry.sync()

    async def close(self) -> None:
        await self.registry.close()
        await asyncio.to_thread(self._decoders.stop)

    @property
    def ready(self) -> bool:
        return self.registry.synced

    def list_models(self) -> list[ModelInfo]:
        return self.registry.models()

    def get_model(self, name: str) -> ModelInfo:
        return self.registry.model(name)

    def describe(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> tuple[int, Manifest]:
        """The version `classify` would answer with now, and its manifest (for metadata calls)."""
        with self.registry.acquire(name, version, label) as handle:
            return handle.version, handle.manifest

    def reject(self, model: str, exc: BaseException, version: int | None = None) -> None:
        """Count a classification a protocol refused before calling `classify`, as it would."""
        self._observe(ClassifyRequest(model, ()), version, error_code(exc), time.perf_counter())

    async def classify(
        self, request: ClassifyRequest, timeout: float | None = None
    ) -> ClassifyResult:
        """Classify every input with one version; raises a `ServeError` (or TimeoutError)."""
        started = time.perf_counter()
        version: int | None = None
        try:
            self._check(request)
            with self.registry.acquire(request.model, request.version, request.label) as handle:
                version = handle.version
                batcher = handle.batcher
                with batcher.arriving():
                    inputs = await self._prepare(
                        request.inputs, handle.manifest.preprocessing, busy=batcher.queue_depth > 0
                    )
                async with asyncio.timeout(timeout):
                    probs = await batcher.predict(inputs)
                labels = handle.manifest.classes
        except BaseException as exc:
            code = error_code(exc)
            if code == "INTERNAL":
                log.exception("classify %s failed", request.model)
            self._observe(request, version, code, started)
            raise
        self._observe(request, version, "OK", started)
        return ClassifyResult(
            request.model, version, labels, probs, top_k(probs, labels, request.top_k)
        )

    def _observe(
        self, request: ClassifyRequest, version: int | None, code: str, started: float
    ) -> None:
        if code == "NOT_FOUND" and request.model not in self.registry.names():
            model = "<unknown>"  # keep label cardinality bounded under junk model names
        else:
            model = request.model
        seconds = time.perf_counter() - started
        self.metrics.observe_request(model, version, code, seconds, len(request.inputs))

    def _check(self, request: ClassifyRequest) -> None:
        if not request.model:
            raise ModelNotFound("", self.registry.names())
        if request.version is not None and request.version < 0:
            raise VersionNotFound(request.model, request.version)
        if not request.inputs:
            raise InvalidInput("the request has no inputs")
        if len(request.inputs) > self.settings.max_images:
            raise InvalidInput(
                f"{len(request.inputs)} inputs, over the limit of {self.settings.max_images}"
            )
        if request.top_k < 0:
            raise InvalidInput(f"top_k must be >= 0, not {request.top_k}")

    async def _prepare(self, inputs: Sequence[Input], pre: Preprocessing, busy: bool) -> np.ndarray:
        size = sum(len(i.data) if isinstance(i, ImageInput) else i.array.nbytes for i in inputs)
        if not busy and len(inputs) == 1 and size <= _INLINE_BYTES:
            return self._preprocess(inputs, pre)
        return await self._decoders.run(lambda items: self._preprocess(items, pre), inputs)

    def _preprocess(self, inputs: Sequence[Input], pre: Preprocessing) -> np.ndarray:
        """Every input -> one float32 [n, H, W, C] array; errors name the input index."""
        out = np.empty((len(inputs), *pre.input_shape), dtype=np.float32)
        for index, item in enumerate(inputs):
            try:
                out[index] = self._one(item, pre)
            except InvalidInput as exc:
                message = str(exc) if exc.index is None else str(exc).split(": ", 1)[-1]
                raise InvalidInput(message, index=index) from exc
        return out

    def _one(self, item: Input, pre: Preprocessing) -> np.ndarray:
        max_pixels = self.settings.max_pixels
        if isinstance(item, ImageInput):
            return preprocess_bytes(item.data, pre, max_pixels=max_pixels)
        array = item.array
        if item.preprocessed:
            if array.ndim == 4 and array.shape[0] == 1:
                array = array[0]
            if array.ndim != 3:
                raise InvalidInput(
                    f"a model input must be {list(pre.input_shape)}, not {list(array.shape)}"
                )
            return check_model_input(array, pre.input_shape)[0]
        if array.ndim >= 2 and array.shape[0] * array.shape[1] > max_pixels:
            raise InvalidInput(f"{array.shape[1]}x{array.shape[0]} pixels, over {max_pixels}")
        return preprocess_pixels(array, pre)

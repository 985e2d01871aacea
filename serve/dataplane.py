"""The protocol-independent core every API on the port calls: classify, list and describe models.

Domain types in, domain types out (protobuf stops at the protocol's converter). A request pins
ONE version through a registry handle for its whole life: the protocol's conversion runs as a
callback under that handle (`infer`), so the manifest it converts against, the model that answers
and the version it is counted under are the same. Inputs are checked and preprocessed in the
request path (`serve.prepare`), then wait for one batched model call. Request metrics are
recorded here so every protocol counts alike.

    plane = DataPlane(settings, metrics)
    await plane.start()
    result = await plane.classify(ClassifyRequest("mnist", [ImageInput(png_bytes)]))
    result = await plane.infer("mnist", None, None, lambda manifest: to_domain(message, manifest))
    result = await plane.classify(ClassifyRequest("mnist", inputs, outputs=ONLY_EMBEDDING))
    result.embeddings  # float32 [n, d]: the penultimate layer (serve.embedding)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from serve.batching import Batcher
from serve.embedding import EmbeddingNotFound, VersionBatcher
from serve.errors import InvalidInput, ModelNotFound, VersionNotFound, status_name
from serve.loader import Classifier, load
from serve.manifest import Manifest
from serve.metrics import ServeMetrics
from serve.prepare import ImageInput, Input, Inputs, Preparer, TensorBatch, TensorInput
from serve.registry import Loader, ModelRegistry
from serve.settings import Settings
from serve.versions import ModelInfo

__all__ = [
    "EMBEDDING", "ONLY_EMBEDDING", "PROBABILITIES", "ClassifyRequest", "ClassifyResult",
    "DataPlane", "ImageInput", "Input", "TensorBatch", "TensorInput", "top_k",
]  # fmt: skip
log = logging.getLogger(__name__)
Ranking = list[list[tuple[str, float]]]
PROBABILITIES = "probabilities"  # what a request may ask for (`ClassifyRequest.outputs`)
EMBEDDING = "embedding"
ONLY_PROBABILITIES = frozenset({PROBABILITIES})
ONLY_EMBEDDING = frozenset({EMBEDDING})


@dataclass(frozen=True)
class ClassifyRequest:
    model: str
    inputs: Inputs
    version: int | None = None
    label: str | None = None
    top_k: int = 1  # 0: the caller needs the probabilities only
    outputs: frozenset[str] = ONLY_PROBABILITIES  # PROBABILITIES and/or EMBEDDING


@dataclass(frozen=True)
class ClassifyResult:
    model: str
    version: int
    labels: tuple[str, ...]
    probabilities: np.ndarray  # float32 [inputs, classes], manifest class order ([n, 0]: not asked)
    k: int = 1
    manifest: Manifest | None = None  # the answering version's (server side)
    ranked: Ranking | None = None  # as a server sent it (client side)
    embeddings: np.ndarray | None = None  # float32 [inputs, d] when EMBEDDING was asked for

    @cached_property
    def top_k(self) -> Ranking:
        """Per input, the `k` best (label, score) pairs, best first (computed when asked)."""
        if self.ranked is not None:
            return self.ranked
        return top_k(self.probabilities, self.labels, self.k)


def top_k(probabilities: np.ndarray, labels: Sequence[str], k: int) -> Ranking:
    """The `k` best (label, score) pairs of each row, best first (ties: manifest order)."""
    k = max(1, min(k, len(labels)))
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return [
        [(labels[i], float(row[i])) for i in idx]
        for row, idx in zip(probabilities, order, strict=True)
    ]


Build = Callable[[Manifest], ClassifyRequest]


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
        self._prepare = Preparer(settings.decode_threads, settings.max_pixels)
        self.registry = ModelRegistry(
            settings.repository, settings.policy, self._make_batcher, loader=loader,
            on_change=self._changed,
        )  # fmt: skip

    def _make_batcher(self, name: str, version: int, classifier: Classifier) -> Batcher:
        return VersionBatcher(
            classifier,
            self.settings.repository / name / str(version),
            max_batch_size=self.settings.max_batch_size,
            timeout=self.settings.batch_timeout_ms / 1000.0,
            queue_bound=self.settings.queue_bound,
            name=f"{name}-v{version}",
            observe=self.metrics.batch_observer(name, version),
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
        await asyncio.to_thread(self._prepare.stop)

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

    async def classify(
        self, request: ClassifyRequest, timeout: float | None = None
    ) -> ClassifyResult:
        """Classify every input with one version; raises a `ServeError` (or TimeoutError)."""
        return await self.infer(
            request.model, request.version, request.label, lambda _: request, timeout
        )

    async def infer(
        self,
        model: str,
        version: int | None,
        label: str | None,
        build: Build,
        timeout: float | None = None,
    ) -> ClassifyResult:
        """Pin a version, `build` the request from its manifest, classify; counted once."""
        started = time.perf_counter()
        number: int | None = None
        images = 0
        try:
            if not model:
                raise ModelNotFound("", self.registry.names())
            if version is not None and version < 0:
                raise VersionNotFound(model, version)
            if timeout is not None and timeout <= 0:
                raise TimeoutError("the deadline passed before the request was read")
            with self.registry.acquire(model, version, label) as handle:
                number = handle.version
                manifest = handle.manifest
                request = build(manifest)
                images = self._check(request)
                batcher = handle.batcher
                embedding = EMBEDDING in request.outputs
                if embedding and not (manifest.embedding and isinstance(batcher, VersionBatcher)):
                    path = self.settings.repository / model / str(number)
                    raise EmbeddingNotFound(model, number, path)
                with batcher.arriving():
                    inputs = await self._prepare(
                        request.inputs, manifest.preprocessing, busy=batcher.queue_depth > 0
                    )
                left = None if timeout is None else timeout - (time.perf_counter() - started)
                async with asyncio.timeout(left):
                    probs, vectors = await self._run(batcher, inputs, request.outputs, manifest)
        except BaseException as exc:
            code = status_name(exc)
            if code == "INTERNAL":
                log.exception("classify %s failed", model)
            self._observe(model, number, code, started, images)
            raise
        self._observe(model, number, "OK", started, images)
        return ClassifyResult(
            model, number, manifest.classes, probs, request.top_k, manifest, embeddings=vectors
        )

    async def _run(
        self, batcher: Batcher, inputs: np.ndarray, outputs: frozenset[str], manifest: Manifest
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(probabilities, embeddings) as asked; both at once when both are asked for."""
        if EMBEDDING not in outputs:
            return await batcher.predict(inputs), None
        assert isinstance(batcher, VersionBatcher)
        if PROBABILITIES not in outputs:
            vectors = await batcher.embed(inputs, manifest)
            return np.zeros((len(inputs), 0), np.float32), vectors
        probs, vectors = await asyncio.gather(
            batcher.predict(inputs), batcher.embed(inputs, manifest)
        )
        return probs, vectors

    def _observe(
        self, model: str, version: int | None, code: str, started: float, images: int
    ) -> None:
        if code == "NOT_FOUND" and model not in self.registry.names():
            model = "<unknown>"  # keep label cardinality bounded under junk model names
        seconds = time.perf_counter() - started
        self.metrics.observe_request(model, version, code, seconds, images)

    def _check(self, request: ClassifyRequest) -> int:
        """The number of inputs, after the request-level limits."""
        count = len(request.inputs)
        if not count:
            raise InvalidInput("the request has no inputs")
        if count > self.settings.max_images:
            raise InvalidInput(f"{count} inputs, over the limit of {self.settings.max_images}")
        if request.top_k < 0:
            raise InvalidInput(f"top_k must be >= 0, not {request.top_k}")
        return count

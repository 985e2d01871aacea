"""Embeddings: the penultimate layer's vector of a version, served beside its probabilities.

A version exported with the `embedding` SavedModel signature (training writes it;
`scripts/convert.py` adds it to older versions) records it in its manifest
(`manifest.embedding`: signature, output, dimension, layer). Embeddings always run on
TensorFlow: a LiteRT artefact holds the probabilities only, so a version served on LiteRT loads
its SavedModel's embedding signature on the first embedding request.

    batcher = VersionBatcher(classifier, path, max_batch_size=32)   # what the data plane makes
    vectors = await batcher.embed(inputs, manifest)   # float32 [n, manifest.embedding.dimension]
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np

from serve.batching import Batcher, BatchObserver
from serve.errors import VersionNotFound
from serve.manifest import Manifest

CONVERT_COMMAND = "python scripts/convert.py"


class EmbeddingNotFound(VersionNotFound):
    """The version has no `embedding` signature (exported before it existed); NOT_FOUND."""

    def __init__(self, name: str, version: int, path: Path | str) -> None:
        super().__init__(name, version)
        self.args = (
            f"model {name!r} version {version} has no embedding signature; add it with "
            f"`{CONVERT_COMMAND} {path}`",
        )


class VersionBatcher(Batcher):
    """The version's Batcher for probabilities and, opened on the first embedding request, a
    second one (same limits, its own worker thread) for embeddings; both close together."""

    def __init__(
        self,
        classifier: Any,
        path: Path,
        *,
        max_batch_size: int = 32,
        timeout: float = 0.002,
        queue_bound: int = 256,
        name: str = "batcher",
        observe: BatchObserver | None = None,
    ) -> None:
        super().__init__(
            classifier.predict, max_batch_size=max_batch_size, timeout=timeout,
            queue_bound=queue_bound, name=name, observe=observe,
        )  # fmt: skip
        self._classifier = classifier
        self._path = path
        self._embedder: Batcher | None = None
        self._opening = asyncio.Lock()

    async def embed(self, inputs: np.ndarray, manifest: Manifest) -> np.ndarray:
        """Embeddings for `inputs` (float32 [n, H, W, C]) from a batched TensorFlow call."""
        if manifest.embedding is None:
            raise EmbeddingNotFound(manifest.task, manifest.version, self._path)
        embedder = self._embedder or await self._open(manifest)
        return await embedder.predict(inputs)

    async def _open(self, manifest: Manifest) -> Batcher:
        async with self._opening:
            if self._embedder is None:
                embed = getattr(self._classifier, "embed", None)
                if embed is None:  # LiteRT: load the SavedModel's signature, off the loop
                    from serve.loader import SavedModelClassifier

                    tensorflow = await asyncio.to_thread(
                        SavedModelClassifier, str(self._path), manifest
                    )
                    embed = tensorflow.embed
                embedder = Batcher(
                    embed, max_batch_size=self.max_batch_size, timeout=self.timeout,
                    queue_bound=self.queue_bound, name=f"{self.name}-embed",
                )  # fmt: skip
                embedder.start()
                self._embedder = embedder
            return self._embedder

    async def close(self) -> None:
        await super().close()
        if self._embedder is not None:
            await self._embedder.close()

"""Choosing a version's inference runtime: TensorFlow (the SavedModel), LiteRT, or `auto`.

`litert` serves every batch with LiteRT; `auto` measures both runtimes at warm-up (batches of
1 to 256) and uses LiteRT only up to the largest size where it was faster at every measured
size up to it, TensorFlow above, so no batch size is slower than on TensorFlow alone (as far
as one measurement on a busy machine can tell). Either way LiteRT must first agree with
TensorFlow to within `TOLERANCE` on a few synthetic inputs; a runtime that cannot be used (no
package, missing, corrupt or stale artefact, failed conversion, disagreement) leaves the
version on TensorFlow with one warning line.

    classifier = with_runtime(version, tensorflow_classifier, "auto")
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, get_args

import numpy as np

from serve.artefacts import ArtefactError, litert_model
from serve.loader import Classifier
from serve.repository import ModelVersion

if TYPE_CHECKING:
    from serve.litert import LiteRTClassifier

log = logging.getLogger(__name__)
Runtime = Literal["auto", "tensorflow", "litert"]
RUNTIMES: tuple[str, ...] = get_args(Runtime)
TOLERANCE = 1e-4  # largest probability difference accepted against TensorFlow
CHECK_IMAGES = 8
MEASURE_SIZES = (1, 8, 32, 128, 256)
MEASURE_BUDGET = 0.25  # seconds of timed calls per runtime and batch size, at most
MEASURE_SLOWEST = 0.1  # seconds per TensorFlow call beyond which larger sizes are not measured


class RuntimeRefused(Exception):
    """The runtime's outputs disagree with TensorFlow's beyond TOLERANCE."""


class BySize:
    """LiteRT for batches of at most `limit` images, TensorFlow above (a measured crossover)."""

    def __init__(self, fast: Classifier, reference: Classifier, limit: int) -> None:
        self.fast, self.reference, self.limit = fast, reference, limit
        self.labels = reference.labels
        self.input_shape = reference.input_shape

    def predict(self, batch: np.ndarray) -> np.ndarray:
        chosen = self.fast if len(batch) <= self.limit else self.reference
        return chosen.predict(batch)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """Embeddings always come from TensorFlow (LiteRT has the probabilities only)."""
        embed: Callable[[np.ndarray], np.ndarray] = self.reference.embed  # type: ignore[attr-defined]
        return embed(batch)


def check_inputs(version: ModelVersion, count: int = CHECK_IMAGES) -> np.ndarray:
    """Deterministic synthetic images in the model's input range (pixels 0..255, preprocessed)."""
    pre = version.manifest.preprocessing
    pixels = np.random.default_rng(0).integers(0, 256, (count, *pre.input_shape))
    return (pixels * pre.scale + pre.offset).astype(np.float32)


def largest_difference(candidate: Classifier, reference: Classifier, inputs: np.ndarray) -> float:
    return float(np.max(np.abs(candidate.predict(inputs) - reference.predict(inputs))))


def _seconds_per_call(
    fast: Callable[[np.ndarray], np.ndarray],
    reference: Callable[[np.ndarray], np.ndarray],
    batch: np.ndarray,
) -> tuple[float, float]:
    """Median seconds per call of each; calls alternate so that a burst of load from
    elsewhere on the machine hits both alike."""
    fast(batch)  # the first call at a size pays for allocation
    reference(batch)
    times: tuple[list[float], list[float]] = ([], [])
    while len(times[0]) < 3 or (sum(times[1]) < MEASURE_BUDGET and len(times[0]) < 20):
        for predict, spent in zip((fast, reference), times, strict=True):
            start = time.perf_counter()
            predict(batch)
            spent.append(time.perf_counter() - start)
    return float(np.median(times[0])), float(np.median(times[1]))


def measured_limit(fast: Classifier, reference: Classifier, sizes: tuple[int, ...]) -> int:
    """The largest measured batch size up to which `fast` won at every measured size (0: none).

    Sizes past one where a TensorFlow call took MEASURE_SLOWEST are not measured (a slow load).
    """
    limit = 0
    rng = np.random.default_rng(1)
    for size in sizes:
        batch = rng.random((size, *reference.input_shape), dtype=np.float32)
        fast_s, reference_s = _seconds_per_call(fast.predict, reference.predict, batch)
        log.debug(
            "batch %d: LiteRT %.3f ms, TensorFlow %.3f ms", size, fast_s * 1e3, reference_s * 1e3
        )
        if fast_s >= reference_s:
            return limit
        limit = size
        if reference_s > MEASURE_SLOWEST:
            break
    return limit


def open_litert(version: ModelVersion, reference: Classifier) -> tuple[LiteRTClassifier, str]:
    """LiteRT for the version, checked against `reference`; raises with the reason it cannot."""
    from serve.litert import LiteRTClassifier  # ImportError when ai-edge-litert is absent

    flatbuffer, origin = litert_model(version)
    manifest = version.manifest
    try:
        lite = LiteRTClassifier(flatbuffer, manifest.classes, manifest.input_shape)
    except (ValueError, RuntimeError) as exc:
        raise ArtefactError(f"{origin} is not a usable LiteRT model: {exc}") from exc
    difference = largest_difference(lite, reference, check_inputs(version))
    if not difference <= TOLERANCE:  # NaN included
        raise RuntimeRefused(
            f"{origin} disagrees with the SavedModel by {difference:.3g} (> {TOLERANCE:g})"
        )
    return lite, origin


def measure_sizes(max_batch: int | None) -> tuple[int, ...]:
    """MEASURE_SIZES below `max_batch`, then `max_batch` itself (all of them when None)."""
    if max_batch is None:
        return MEASURE_SIZES
    return (*(size for size in MEASURE_SIZES if size < max_batch), max_batch)


def with_runtime(
    version: ModelVersion, tensorflow: Classifier, runtime: str, max_batch: int | None = None
) -> Classifier:
    """The version's classifier for `runtime`, given its warmed TensorFlow classifier.

    `max_batch`: the largest batch the caller will send (the server's max_batch_size), so
    that `auto` measures up to it only.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, not {runtime!r}")
    if runtime == "tensorflow":
        return tensorflow
    name = f"{version.name} v{version.version}"
    try:
        lite, origin = open_litert(version, tensorflow)
    except (ImportError, ArtefactError, RuntimeRefused) as exc:
        log.warning("%s: LiteRT refused, TensorFlow serves it: %s", name, exc)
        return tensorflow
    if runtime == "litert":
        log.info("%s: LiteRT serves it (%s)", name, origin)
        return lite
    limit = measured_limit(lite, tensorflow, measure_sizes(max_batch))
    lite.drop_larger(limit)
    if limit == 0:
        log.info("%s: auto: TensorFlow was faster at batch 1; TensorFlow serves it", name)
        return tensorflow
    log.info("%s: auto: LiteRT serves batches <= %d, TensorFlow above (%s)", name, limit, origin)
    return BySize(lite, tensorflow, limit)

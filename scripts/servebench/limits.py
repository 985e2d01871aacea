"""The in-process limit: the SavedModel's serving signature called directly, no server at all."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


class InProcess:
    """Times the bare model call at a given batch size (after a warm-up call)."""

    def __init__(self, version_dir: Path) -> None:
        import tensorflow as tf

        from serve.manifest import Manifest

        manifest = Manifest.read(version_dir / "manifest.json")
        self._tf = tf
        self._model = tf.saved_model.load(str(version_dir))
        self._signature = self._model.signatures[manifest.signature.name]
        self._input = manifest.signature.input
        self.input_shape = manifest.input_shape
        self._cache: dict[int, tuple[float, float]] = {}

    def measure(self, batch: int, seconds: float) -> tuple[float, float]:
        """(images/s, p50 seconds per call) at `batch` images per call."""
        if batch not in self._cache:
            inputs = np.random.default_rng(0).random((batch, *self.input_shape), np.float32)
            call = {self._input: self._tf.constant(inputs)}
            self._signature(**call)
            times: list[float] = []
            stop_at = time.perf_counter() + seconds
            while len(times) < 5 or time.perf_counter() < stop_at:
                start = time.perf_counter()
                self._signature(**call)
                times.append(time.perf_counter() - start)
            per_call = sum(times) / len(times)
            self._cache[batch] = (batch / per_call, float(np.median(times)))
        return self._cache[batch]

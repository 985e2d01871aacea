"""A `Classifier` on LiteRT (`ai-edge-litert`, XNNPACK CPU delegate) from a `.tflite` flatbuffer.

An Interpreter is not thread-safe and resizing its input re-plans the whole graph, so this
keeps one interpreter per batch size and lets one thread at a time use them. Batches of up to
EXACT_SIZES images run in one call; a larger one runs as power-of-two chunks, largest first,
plus a remainder of at most EXACT_SIZES (37 = 32 + 5). So a server whose batches vary in size
under load keeps a dozen interpreters rather than building one per size it meets (the most
recently used `max_interpreters` are kept in any case).

    classifier = LiteRTClassifier(Path("trained/mnist/3/model.tflite").read_bytes(), labels, shape)
    probs = classifier.predict(batch)  # float32 [N, H, W, C] -> float32 [N, classes]
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

THREADS_ENV = "CLFSERVE_LITERT_THREADS"
SINGLE_THREAD_BATCH = 8  # up to this size, one thread beat two (2 busy CPUs, mnist and cifar10)
EXACT_SIZES = 8  # batches up to this size get an interpreter of their own size


def chunk_sizes(size: int) -> list[int]:
    """The calls a batch of `size` images runs as: itself up to EXACT_SIZES, else powers of two,
    largest first, then a remainder of at most EXACT_SIZES (37 -> [32, 5], 24 -> [16, 8])."""
    chunks = []
    while size > EXACT_SIZES:
        chunks.append(1 << (size.bit_length() - 1))  # the largest power of two <= size
        size -= chunks[-1]
    if size:
        chunks.append(size)
    return chunks


def default_threads(size: int | None = None) -> int:
    """`$CLFSERVE_LITERT_THREADS`, else one thread for batches of up to SINGLE_THREAD_BATCH
    (splitting a sub-millisecond call costs more than it saves), else every CPU."""
    configured = os.environ.get(THREADS_ENV)
    if configured:
        return int(configured)
    if size is not None and size <= SINGLE_THREAD_BATCH:
        return 1
    return max(1, os.cpu_count() or 1)


class _Slot:
    """One interpreter allocated for one batch size, with its input and output indices."""

    def __init__(self, interpreter: Any, shape: tuple[int, ...]) -> None:
        index = interpreter.get_input_details()[0]["index"]
        interpreter.resize_tensor_input(index, list(shape), strict=False)
        interpreter.allocate_tensors()
        self.interpreter = interpreter
        self.input = index
        self.output = interpreter.get_output_details()[0]["index"]

    def run(self, batch: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self.input, batch)
        self.interpreter.invoke()
        return np.asarray(self.interpreter.get_tensor(self.output), dtype=np.float32)


class LiteRTClassifier:
    """The flatbuffer's one input -> one output, run on LiteRT. Raises ValueError on a bad model."""

    def __init__(
        self,
        model: bytes,
        labels: tuple[str, ...],
        input_shape: tuple[int, int, int],
        *,
        threads: int | None = None,
        max_interpreters: int = 16,
    ) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter_class = Interpreter
        self._model = model
        self._threads = threads  # None: by batch size (default_threads)
        self._max = max(1, max_interpreters)
        self._slots: OrderedDict[int, _Slot] = OrderedDict()
        self._lock = threading.Lock()
        self.labels = labels
        self.input_shape = input_shape
        probe = self._new_interpreter(1)  # a corrupt or foreign flatbuffer fails here, at load
        inputs, outputs = probe.get_input_details(), probe.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(f"expected one input and one output, not {len(inputs)}/{len(outputs)}")
        if tuple(inputs[0]["shape_signature"][1:]) != input_shape:
            raise ValueError(
                f"model input {inputs[0]['shape_signature']} is not [N, *{input_shape}]"
            )
        if int(outputs[0]["shape_signature"][-1]) != len(labels):
            raise ValueError(
                f"model has {outputs[0]['shape_signature'][-1]} outputs, not {len(labels)}"
            )

    def _new_interpreter(self, size: int) -> Any:
        threads = self._threads or default_threads(size)
        return self._interpreter_class(model_content=self._model, num_threads=threads)

    def _slot(self, size: int) -> _Slot:
        slot = self._slots.get(size)
        if slot is None:
            slot = _Slot(self._new_interpreter(size), (size, *self.input_shape))
            self._slots[size] = slot
            while len(self._slots) > self._max:
                self._slots.popitem(last=False)
        else:
            self._slots.move_to_end(size)
        return slot

    def drop_larger(self, size: int) -> None:
        """Free the interpreters of batches over `size` (measured once, never sent again)."""
        with self._lock:
            for larger in [n for n in self._slots if n > size]:
                del self._slots[larger]

    def predict(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if batch.ndim != 4 or tuple(batch.shape[1:]) != self.input_shape:
            raise ValueError(f"expected [N, *{self.input_shape}], got {list(batch.shape)}")
        if len(batch) == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        chunks = chunk_sizes(len(batch))
        with self._lock:
            if len(chunks) == 1:
                return self._slot(len(batch)).run(batch)
            parts, start = [], 0
            for size in chunks:
                parts.append(self._slot(size).run(batch[start : start + size]))
                start += size
        return np.concatenate(parts)

"""Per-epoch checkpoints outside the repository, so an interrupted run can be resumed.

A run's directory is `<cache>/runs/<name>-<arch>-<hash of every option>/` (the cache is
`$CLFSERVE_CACHE`, `$XDG_CACHE_HOME/clfserve` or `~/.cache/clfserve`). After every epoch it holds
`state.npz` (model weights and optimizer variables: momentum, moving averages, step count),
`state.json` (history, per-epoch seconds, early-stopping counters) and `best.weights.h5`.
Both state files are replaced atomically, the weights before the history, so a kill at any
moment leaves the last complete epoch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from training.data import cache_dir


class CheckpointError(ValueError):
    """A checkpoint exists but does not fit the model being trained."""


def run_directory(label: str, key: Mapping[str, Any]) -> Path:
    """The directory of the run described by `key` (any JSON-able facts that fix the result)."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    return cache_dir() / "runs" / f"{label}-{digest[:12]}"


def _replace(path: Path, write) -> None:
    scratch = path.with_name(f".{path.name}.partial{path.suffix}")
    write(scratch)
    os.replace(scratch, path)


def improves(history: Mapping[str, Sequence[float]], logs: Mapping[str, Any]) -> bool:
    """Whether the epoch of `logs` beats every epoch in `history`: a higher val_accuracy, or the
    best one again with a lower val_loss than the best epochs so far (on a validation split of
    20 images many epochs tie at 100 %, and the first of them is rarely the best model)."""
    accuracy = logs.get("val_accuracy")
    if accuracy is None:
        return False
    earlier = history.get("val_accuracy", [])
    if not earlier or accuracy > max(earlier):
        return True
    if accuracy < max(earlier) or "val_loss" not in logs:
        return False
    tied = [
        loss
        for past, loss in zip(earlier, history.get("val_loss", []), strict=False)
        if past == accuracy
    ]
    return not tied or logs["val_loss"] < min(tied)


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves the run after each epoch, keeps the best weights (`improves`), and stops after
    `patience` epochs without a lower val_loss (Keras' EarlyStopping, but resumable)."""

    def __init__(self, directory: Path, patience: int) -> None:
        super().__init__()
        self.directory = directory
        self.patience = patience
        self.history: dict[str, list[float]] = {}
        self.epoch_seconds: list[float] = []
        self._started = 0.0

    @property
    def best_weights(self) -> Path:
        return self.directory / "best.weights.h5"

    @property
    def epochs_done(self) -> int:
        return len(self.epoch_seconds)

    def start_fresh(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory.mkdir(parents=True)

    def restore(self, model: keras.Model) -> bool:
        """Load the last complete epoch into `model` (compiled); False if there is none."""
        state_file, arrays_file = self.directory / "state.json", self.directory / "state.npz"
        if not (state_file.exists() and arrays_file.exists()):
            return False
        state = json.loads(state_file.read_text())
        optimizer = model.optimizer
        optimizer.build(model.trainable_variables)
        with np.load(arrays_file) as arrays:
            saved = [arrays[f"v{i}"] for i in range(len(arrays.files))]
        variables = [*model.weights, *optimizer.variables]
        if len(saved) != len(variables) or any(
            tuple(a.shape) != tuple(v.shape) for a, v in zip(saved, variables, strict=True)
        ):
            raise CheckpointError(f"checkpoint in {self.directory} does not match this model")
        for variable, value in zip(variables, saved, strict=True):
            variable.assign(value)
        self.history = {k: list(v) for k, v in state["history"].items()}
        self.epoch_seconds = list(state["epoch_seconds"])
        return True

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        self._started = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        logs = dict(logs or {})
        better = improves(self.history, logs)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(float(value))
        self.epoch_seconds.append(round(time.monotonic() - self._started, 1))
        if better:
            self.model.save_weights(str(self.best_weights), overwrite=True)
        self._save()
        losses = self.history.get("val_loss", [])
        if losses and len(losses) - 1 - int(np.argmin(losses)) >= self.patience:
            self.model.stop_training = True
        print(f"epoch {self.epochs_done} took {self.epoch_seconds[-1]:.1f}s", flush=True)

    def _save(self) -> None:
        variables = [*self.model.weights, *self.model.optimizer.variables]
        arrays = {f"v{i}": np.asarray(v.numpy()) for i, v in enumerate(variables)}
        _replace(self.directory / "state.npz", lambda p: np.savez(p, **arrays))
        state = {"history": self.history, "epoch_seconds": self.epoch_seconds}
        _replace(self.directory / "state.json", lambda p: p.write_text(json.dumps(state)))

    def stopped_early(self) -> bool:
        losses = self.history.get("val_loss", [])
        return bool(losses) and len(losses) - 1 - int(np.argmin(losses)) >= self.patience

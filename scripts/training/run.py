"""One training run, start to finish: data -> fit -> test evaluation -> new repository version."""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from batch.metrics import ClassificationMetrics
from serve.manifest import Manifest, Preprocessing
from training.data import Split, load_folder, load_keras, validation_split
from training.export import serving_function, write_version
from training.fit import FitOptions, fit, predict
from training.tasks import Architecture, Task


@dataclass(frozen=True)
class RunOptions:
    task: Task
    architecture: Architecture
    preprocessing: Preprocessing
    data: Path | None
    epochs: int
    batch_size: int
    learning_rate: float
    patience: int
    seed: int
    val_fraction: float
    name: str
    repository: Path


def load_data(options: RunOptions) -> tuple[Split, Split, str]:
    if options.data is not None:
        return load_folder(options.data, options.preprocessing)
    classes = options.task.classes or ()
    return load_keras(options.task.keras_dataset or "", options.preprocessing, classes)


def run(options: RunOptions) -> tuple[Path, Manifest]:
    keras.utils.set_random_seed(options.seed)
    started = time.monotonic()
    train_all, test, fingerprint = load_data(options)
    train, val = validation_split(train_all, options.val_fraction, options.seed)
    print(
        f"{options.name}: {len(train.labels)} train, {len(val.labels)} validation, "
        f"{len(test.labels)} test images; classes {list(train_all.classes)}; "
        f"skipped {len(train_all.skipped) + len(test.skipped)} unreadable",
        flush=True,
    )
    recipe = options.architecture.recipe
    model = options.architecture.build(options.preprocessing.input_shape, len(train_all.classes))
    fit_options = FitOptions(
        epochs=options.epochs,
        batch_size=options.batch_size,
        learning_rate=options.learning_rate,
        schedule=recipe.schedule,
        label_smoothing=recipe.label_smoothing,
        weight_decay=recipe.weight_decay,
        patience=options.patience,
        augment=recipe.augment,
        seed=options.seed,
    )
    history = fit(model, train, val, fit_options)
    compute = tf.function(serving_function(model, recipe.tta_flip))
    test_pred = predict(compute, test.images).argmax(axis=1)
    val_pred = predict(compute, val.images).argmax(axis=1)
    metrics = ClassificationMetrics.compute(train_all.classes, test.labels, test_pred)
    print(metrics.report_text(digits=4), flush=True)
    manifest = Manifest(
        task=options.name,
        version=0,
        classes=train_all.classes,
        preprocessing=options.preprocessing,
        architecture=options.architecture.name,
        metrics={
            "test_accuracy": round(metrics.accuracy, 6),
            "val_accuracy": round(float(np.mean(val_pred == val.labels)), 6),
            "test_images": metrics.total,
            "classification_report": metrics.to_dict(),
        },
        training={
            "task_spec": options.task.name,
            "description": options.architecture.description,
            "parameters": int(model.count_params()),
            "epochs_requested": options.epochs,
            "epochs_run": len(history.get("loss", [])),
            "batch_size": options.batch_size,
            "learning_rate": options.learning_rate,
            "schedule": recipe.schedule,
            "label_smoothing": recipe.label_smoothing,
            "weight_decay": recipe.weight_decay,
            "patience": options.patience,
            "augmentation": asdict(recipe.augment),
            "test_time_flip": recipe.tta_flip,
            "seed": options.seed,
            "validation_fraction": options.val_fraction,
            "data": str(options.data) if options.data else "keras download",
            "data_fingerprint": fingerprint,
            "train_images": len(train.labels),
            "validation_images": len(val.labels),
            "skipped_unreadable": len(train_all.skipped) + len(test.skipped),
            "wall_time_seconds": round(time.monotonic() - started, 1),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        },
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    return write_version(options.repository, model, manifest, history, tta_flip=recipe.tta_flip)

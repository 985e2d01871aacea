"""One training run, start to finish: data -> fit -> test evaluation -> new repository version."""

from __future__ import annotations

import platform
import shutil
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from batch.accuracy import ClassificationMetrics
from serve.manifest import Manifest, Preprocessing
from serve.repository import ModelVersion
from training.checkpoint import run_directory
from training.data import Split, load_folder, load_keras, validation_split
from training.export import serving_function, write_version
from training.fit import FitOptions, fit, predict
from training.recipe import cpu_flags, training_precision
from training.task import Architecture, Task
from training.transfer import copy_backbone


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
    resume: bool = False  # continue the interrupted run with these same options, if any
    init_from: ModelVersion | None = None  # seed the backbone from this version (transfer.py)


def checkpoint_dir(options: RunOptions, fingerprint: str) -> Path:
    """Every option that changes the result keys the run, so --resume never mixes two runs."""
    key = {
        "task": options.task.name,
        "architecture": options.architecture.name,
        "recipe": asdict(options.architecture.recipe),
        "preprocessing": options.preprocessing.to_dict(),
        "data": fingerprint,
        **{k: getattr(options, k) for k in ("epochs", "batch_size", "learning_rate", "patience")},
        **{k: getattr(options, k) for k in ("seed", "val_fraction", "name")},
        **({"init_from": str(options.init_from.path)} if options.init_from else {}),
    }
    return run_directory(f"{options.name}-{options.architecture.name}", key)


def float32_copy(model: keras.Model, build) -> keras.Model:
    """The same weights in a float32 model: what is exported, evaluated and served."""
    if model.dtype_policy.name == "float32":
        return model
    keras.mixed_precision.set_global_policy("float32")
    copy = build(tuple(model.input_shape[1:]), int(model.output_shape[-1]))
    copy.set_weights(model.get_weights())
    return copy


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
    architecture = options.architecture
    recipe = architecture.recipe
    precision = training_precision(recipe.precision, cpu_flags())
    if precision != recipe.precision:
        print(f"{options.name}: {precision}, this CPU has no native bfloat16", flush=True)
    keras.mixed_precision.set_global_policy(precision)
    try:
        model = architecture.build(options.preprocessing.input_shape, len(train_all.classes))
        if architecture.prepare is not None:
            architecture.prepare(model, train.images)
        if options.init_from is not None:
            copied = copy_backbone(model, options.init_from)
            print(f"{options.name}: {len(copied)} layers from {options.init_from.path}", flush=True)
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
            checkpoint_dir=checkpoint_dir(options, fingerprint),
            resume=options.resume,
            sgd=recipe.sgd,
            keep_best=recipe.keep_best,
        )
        history, resumed_after = fit(model, train, val, fit_options)
        model = float32_copy(model, architecture.build)
    finally:
        keras.mixed_precision.set_global_policy("float32")
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
            "init_from": (
                f"{options.init_from.name}:{options.init_from.version}"
                if options.init_from
                else None
            ),
            "optimizer": asdict(recipe.sgd) | {"name": "nesterov-sgd"} if recipe.sgd else "adam",
            "weights": "best val_accuracy epoch, ties to the lower val_loss"
            if recipe.keep_best
            else "last epoch",
            "precision": precision,
            "epoch_seconds": history["seconds"],
            "train_seconds": round(sum(history["seconds"]), 1),
            "resumed_after_epoch": resumed_after,
            "seed": options.seed,
            "validation_fraction": options.val_fraction,
            "data": str(options.data) if options.data else "keras download",
            "data_fingerprint": fingerprint,
            "train_images": len(train.labels),
            "validation_images": len(val.labels),
            "skipped_unreadable": len(train_all.skipped) + len(test.skipped),
            # this process, plus the epochs of the interrupted ones it resumed
            "wall_time_seconds": round(
                time.monotonic() - started + sum(history["seconds"][:resumed_after]), 1
            ),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        },
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    written = write_version(options.repository, model, manifest, history, tta_flip=recipe.tta_flip)
    shutil.rmtree(fit_options.checkpoint_dir, ignore_errors=True)  # published: nothing to resume
    return written

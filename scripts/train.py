#!/usr/bin/env python
"""Train one task's model and write it as a new version of the model repository.

python scripts/train.py --task mnist --data ../shared/datasets/mnist.tar.gz
python scripts/train.py --task cifar10 --arch tutorial --epochs 30
python scripts/train.py --task cifar10 --arch fast --resume   # after an interruption
python scripts/train.py --task cifar10 --arch tutorial-003 --filter sharpen

Every epoch is checkpointed under ~/.cache/clfserve/runs/ (or $CLFSERVE_CACHE/clfserve/runs/);
--resume with the same options continues from the last complete epoch.
"""

from __future__ import annotations

import enum
import os
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import typer
from training.data import DataError
from training.export import RepositoryError, check_writable
from training.tasks import TASKS, TaskError, get_task
from training.transfer import TransferError, find_source

from serve.errors import ManifestError
from serve.manifest import FILTERS, Manifest

app = typer.Typer(add_completion=False, help=__doc__)
Filter = enum.StrEnum("Filter", {name: name for name in FILTERS})  # --filter's choices


def parse_size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError as exc:
        raise typer.BadParameter("give the size as HEIGHTxWIDTH, e.g. 64x64") from exc
    return height, width


@app.command()
def train(
    task: Annotated[str, typer.Option(help=f"one of: {', '.join(TASKS)}")],
    arch: Annotated[
        str | None, typer.Option(help="architecture name (default: the task's best)")
    ] = None,
    data: Annotated[
        Path | None, typer.Option(help="folder with train/ and test/, or a .tar.gz")
    ] = None,
    epochs: Annotated[int | None, typer.Option(min=1)] = None,
    batch_size: Annotated[int | None, typer.Option(min=1)] = None,
    learning_rate: Annotated[float | None, typer.Option(min=0.0)] = None,
    patience: Annotated[int | None, typer.Option(min=1, help="early-stopping patience")] = None,
    augment: Annotated[bool | None, typer.Option(help="override the recipe's augmentation")] = None,
    seed: Annotated[int, typer.Option()] = 42,
    val_fraction: Annotated[float, typer.Option(min=0.01, max=0.5)] = 0.1,
    image_size: Annotated[
        str | None, typer.Option(help="override input size, HEIGHTxWIDTH")
    ] = None,
    filters: Annotated[
        list[Filter] | None,
        typer.Option(
            "--filter",
            help="image filter after resizing, before scaling; repeat to chain; in the manifest",
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="model name in the repository (default: task)")
    ] = None,
    repository: Annotated[Path, typer.Option(help="model repository root")] = Path("trained"),
    resume: Annotated[
        bool, typer.Option(help="continue an interrupted run with the same options")
    ] = False,
    init_from: Annotated[
        str | None,
        typer.Option(help="TASK[:VERSION] in --repository: start from its convolutional layers"),
    ] = None,
) -> None:
    """Train TASK with ARCH and write trained/<task>/<next version>/."""
    try:
        spec = get_task(task)
        architecture = spec.arch(arch)
        pre = spec.preprocessing_for(architecture)
        size = parse_size(image_size)
        if size:
            pre = replace(pre, size=size)
        if filters:
            pre = replace(pre, filters=tuple(str(f) for f in filters))
        if data is not None and not data.exists():
            raise DataError(f"data path {data} does not exist")
        if data is None and spec.keras_dataset is None:
            raise DataError(f"task {task!r} has no downloader: give --data PATH")
        check_writable(repository)
        source = find_source(repository, init_from) if init_from else None
    except (TaskError, DataError, RepositoryError, TransferError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc

    from training.run import RunOptions, run  # heavy imports (TensorFlow) only past validation

    recipe = architecture.recipe
    if augment is not None:
        recipe = replace(recipe, augment=recipe.augment if augment else type(recipe.augment)())
    options = RunOptions(
        task=spec,
        architecture=replace(architecture, recipe=recipe),
        preprocessing=pre,
        data=data,
        epochs=epochs or recipe.epochs,
        batch_size=batch_size or recipe.batch_size,
        learning_rate=learning_rate or recipe.learning_rate,
        patience=patience or recipe.patience,
        seed=seed,
        val_fraction=val_fraction,
        name=name or spec.name,
        repository=repository,
        resume=resume,
        init_from=source,
    )
    started = time.monotonic()
    try:
        path, manifest = run(options)
    except (DataError, RepositoryError, ManifestError, TransferError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    report_done(path, manifest, time.monotonic() - started)


def report_done(path: Path, manifest: Manifest, seconds: float) -> None:
    accuracy = manifest.metrics["test_accuracy"]
    stamp = datetime.now(UTC).strftime("%H:%M:%S")
    typer.echo(f"[{stamp}] wrote {path}  test accuracy {accuracy:.4f}  ({seconds / 60:.1f} min)")


if __name__ == "__main__":
    app()

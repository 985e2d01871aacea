"""Interruptible training: a run killed after epoch 2 of 4 resumes with `--resume` from its
checkpoint and ends where an uninterrupted run ends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from training.checkpoint import EpochCheckpoint, improves
from training.run import RunOptions, checkpoint_dir, run
from training.tasks import get_task

from tests.conftest import REPO_ROOT
from tests.images import write_dataset

EPOCHS = 4


def options(data: Path, repository: Path, resume: bool = False) -> RunOptions:
    """What `scripts/train.py --task cifar10 --arch tiny --epochs 4` builds from its defaults."""
    task = get_task("cifar10")
    arch = task.arch("tiny")
    return RunOptions(
        task=task,
        architecture=arch,
        preprocessing=task.preprocessing_for(arch),
        data=data,
        epochs=EPOCHS,
        batch_size=arch.recipe.batch_size,
        learning_rate=arch.recipe.learning_rate,
        patience=arch.recipe.patience,
        seed=42,
        val_fraction=0.1,
        name="cifar10",
        repository=repository,
        resume=resume,
    )


def history(version: Path) -> dict[str, np.ndarray]:
    rows = (version / "history.csv").read_text().splitlines()
    keys = rows[0].split(",")
    values = np.array([[float(v) for v in row.split(",")] for row in rows[1:]])
    return {key: values[:, index] for index, key in enumerate(keys)}


@pytest.mark.slow
def test_interrupted_run_resumes_where_it_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLFSERVE_CACHE", str(tmp_path / "cache"))
    data = write_dataset(tmp_path / "data", "rgb", per_class=24, test_per_class=4)
    whole, _ = run(options(data, tmp_path / "uninterrupted"))

    original = EpochCheckpoint.on_epoch_end

    def interrupt_after_two(self: EpochCheckpoint, epoch: int, logs: dict | None = None) -> None:
        original(self, epoch, logs)
        if self.epochs_done == 2:
            raise KeyboardInterrupt  # what Ctrl-C (or a killed session) does mid-run

    monkeypatch.setattr(EpochCheckpoint, "on_epoch_end", interrupt_after_two)
    with pytest.raises(KeyboardInterrupt):
        run(options(data, tmp_path / "trained"))
    monkeypatch.undo()
    saved = list((tmp_path / "cache" / "clfserve" / "runs").iterdir())
    assert len(saved) == 1
    assert len(json.loads((saved[0] / "state.json").read_text())["epoch_seconds"]) == 2
    assert not (tmp_path / "trained" / "cifar10").exists() or not any(
        (tmp_path / "trained" / "cifar10").iterdir()
    )

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CLFSERVE_CACHE": str(tmp_path / "cache")}
    args = ["--task", "cifar10", "--arch", "tiny", "--data", data, "--epochs", EPOCHS]
    resumed = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "train.py"), *map(str, args), "--resume",
         "--repository", str(tmp_path / "trained")],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after epoch 2" in resumed.stdout
    version = tmp_path / "trained" / "cifar10" / "1"
    training = json.loads((version / "manifest.json").read_text())["training"]
    assert training["epochs_run"] == EPOCHS
    assert training["resumed_after_epoch"] == 2
    assert not saved[0].exists()  # published: the checkpoint is gone

    expected, got = history(whole), history(version)
    assert list(got["epoch"]) == [1, 2, 3, 4]
    # the same batches and the same schedule: the curves coincide (to float round-off)
    np.testing.assert_allclose(got["loss"], expected["loss"], rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(got["val_loss"], expected["val_loss"], rtol=1e-3, atol=1e-4)


def test_checkpoint_key_separates_runs(tmp_path: Path) -> None:
    first = options(tmp_path, tmp_path)
    assert checkpoint_dir(first, "sha256:a") == checkpoint_dir(first, "sha256:a")
    assert checkpoint_dir(first, "sha256:a") != checkpoint_dir(first, "sha256:b")
    other = options(tmp_path, tmp_path, resume=True)
    assert checkpoint_dir(other, "sha256:a") == checkpoint_dir(first, "sha256:a")
    longer = RunOptions(**{**vars(first), "epochs": EPOCHS + 1})
    assert checkpoint_dir(longer, "sha256:a") != checkpoint_dir(first, "sha256:a")


def test_best_epoch_ties_go_to_the_lower_validation_loss() -> None:
    history = {"val_accuracy": [0.9, 1.0, 1.0], "val_loss": [0.5, 0.40, 0.30]}
    assert improves({}, {"val_accuracy": 0.5, "val_loss": 9.0})  # the first epoch
    assert improves(history, {"val_accuracy": 1.0, "val_loss": 0.25})  # tie, lower loss
    assert not improves(history, {"val_accuracy": 1.0, "val_loss": 0.35})  # tie, not the lowest
    assert not improves(history, {"val_accuracy": 0.95, "val_loss": 0.01})  # less accurate
    assert improves(
        {"val_accuracy": [0.9], "val_loss": [0.1]}, {"val_accuracy": 0.95, "val_loss": 0.9}
    )
    assert not improves(history, {"loss": 0.1})  # no validation split: never "best"

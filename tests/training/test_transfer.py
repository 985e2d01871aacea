"""`scripts/train.py --init-from TASK[:VERSION]`: a new model starts from a shipped backbone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from training.tasks import get_task
from training.transfer import TransferError, copy_backbone, find_source

from serve.loader import keras_model
from serve.repository import ModelVersion, resolve
from tests.images import write_dataset
from tests.training.test_train_script import train


def _source_kernels(source: ModelVersion) -> list[np.ndarray]:
    """The source's conv kernels, read by the loader (whose own tests check it against the
    SavedModel's answers)."""
    donor = keras_model(source)
    return [layer.weights[0].numpy() for layer in donor.layers if "conv2d" in layer.name]


def test_the_backbone_is_copied_and_the_head_is_not(model_repository: Path) -> None:
    source = find_source(model_repository, "rgb:1")
    model = get_task("cifar10").arch("tiny").build((32, 32, 3), 5)  # 5 classes: a new head
    head_before = [w.numpy().copy() for w in model.layers[-1].weights]
    copied = copy_backbone(model, source)
    conv = [layer for layer in model.layers if "conv2d" in layer.name]
    assert copied == [layer.name for layer in conv]
    expected = _source_kernels(source)
    assert len(expected) == len(conv)
    for layer, kernel in zip(conv, expected, strict=True):
        np.testing.assert_array_equal(layer.weights[0].numpy(), kernel)
    for before, after in zip(head_before, model.layers[-1].weights, strict=True):
        np.testing.assert_array_equal(before, after.numpy())


def test_a_source_that_does_not_fit_is_refused(model_repository: Path) -> None:
    gray = find_source(model_repository, "gray")  # one channel
    model = get_task("cifar10").arch("tiny").build((32, 32, 3), 3)
    with pytest.raises(TransferError, match="channels"):
        copy_backbone(model, gray)
    with pytest.raises(TransferError, match="TASK:VERSION"):
        find_source(model_repository, "rgb:one")
    with pytest.raises(TransferError, match="known models: gray, rgb"):
        find_source(model_repository, "cat")


@pytest.mark.slow
def test_train_init_from_records_the_source(model_repository: Path, tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    shutil.copytree(model_repository, repository)
    data = write_dataset(tmp_path / "data", "rgb", per_class=6, test_per_class=2)
    args = ("--task", "cifar10", "--arch", "tiny", "--data", data, "--epochs", "1")
    done = train(*args, "--name", "colours", "--repository", repository, "--init-from", "rgb:1")
    assert done.returncode == 0, done.stderr
    manifest = json.loads((repository / "colours" / "1" / "manifest.json").read_text())
    assert manifest["training"]["init_from"] == "rgb:1"
    assert "layers from" in done.stdout
    refused = train("--task", "cifar10", "--arch", "tiny", "--data", data,
                    "--repository", repository, "--init-from", "nope")  # fmt: skip
    assert refused.returncode == 2 and "--init-from 'nope'" in refused.stderr
    assert resolve(repository, "rgb").version == 1

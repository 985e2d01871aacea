"""scripts/robustness.py: accuracy of each version under small preprocessing changes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from robustness import _shift

from serve.loader import load
from serve.preprocess import preprocess_bytes
from serve.repository import resolve
from tests.conftest import REPO_ROOT
from tests.images import write_dataset


def test_shift_moves_the_picture_one_pixel_and_repeats_the_edge() -> None:
    pixels = np.arange(1, 10, dtype=np.uint8).reshape(3, 3, 1)
    right_down = [[1, 1, 2], [1, 1, 2], [4, 4, 5]]
    left_up = [[5, 6, 6], [8, 9, 9], [8, 9, 9]]
    assert _shift(1)(pixels)[:, :, 0].tolist() == right_down
    assert _shift(-1)(pixels)[:, :, 0].tolist() == left_up


@pytest.mark.slow
def test_the_script_reports_every_perturbation_against_the_true_baseline(
    model_repository: Path, tmp_path: Path
) -> None:
    repository = tmp_path / "repository"
    shutil.copytree(model_repository / "gray", repository / "gray")
    version = resolve(repository, "gray")
    task = version.manifest.training.get("task_spec", "gray")
    data = write_dataset(tmp_path / "datasets" / task, "gray", per_class=1, test_per_class=10)
    out = tmp_path / "figures.json"
    done = subprocess.run(
        [sys.executable, REPO_ROOT / "scripts" / "robustness.py", "--repository", repository,
         "--datasets", tmp_path / "datasets", "--json", out],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    figures = json.loads(out.read_text())["gray/1"]
    expected_names = {"baseline", "lanczos", "box", "shift+1", "shift-1", "jpeg75"}
    assert set(figures) == expected_names | {"bright+10", "bright-10"}
    # the baseline is the plain accuracy, computed here without the script
    files = sorted((data / "test").rglob("*.png"))
    classes = sorted(p.name for p in (data / "test").iterdir())
    inputs = np.stack(
        [preprocess_bytes(f.read_bytes(), version.manifest.preprocessing) for f in files]
    )
    truth = np.array([classes.index(f.parent.name) for f in files])
    plain = float(np.mean(load(version).predict(inputs).argmax(axis=1) == truth))
    assert figures["baseline"] == pytest.approx(plain)
    assert f"gray v1: {100 * plain:.2f}%" in done.stdout

"""Helpers for the clfbatch tests: synthetic folders and the CLI run as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO_ROOT
from tests.images import RGB_CLASSES, encode, rgb_pixels


def cli_env() -> dict[str, str]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO_ROOT))
    env.pop("COLUMNS", None)
    return env


def run_cli(*args: str | Path, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`python -m batch ARGS` in `cwd`, as a user would type `clfbatch ARGS`."""
    return subprocess.run(
        [sys.executable, "-m", "batch", *map(str, args)],
        cwd=cwd,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def write_rgb_folder(root: Path, per_class: int = 6, seed: int = 7) -> dict[str, str]:
    """`root/<class>/*.png` for blue/green/red plus two mislabelled files; {relative: folder}.

    The mislabelled files (a red image in `blue/`, a green one in `red/`) make accuracy < 1.
    """
    rng = np.random.default_rng(seed)
    truth = {}
    for label in RGB_CLASSES:
        (root / label).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            relative = f"{label}/{label}_{index:02d}.png"
            (root / relative).write_bytes(encode(rgb_pixels(label, rng)))
            truth[relative] = label
    for folder, content in (("blue", "red"), ("red", "green")):
        relative = f"{folder}/zz_{content}_looks.png"
        (root / relative).write_bytes(encode(rgb_pixels(content, rng)))
        truth[relative] = folder
    return truth


@pytest.fixture
def rgb_folder(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    folder = tmp_path / "images"
    return folder, write_rgb_folder(folder)

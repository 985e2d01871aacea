"""`clfbatch features`: one grid PNG per convolutional layer, as a real subprocess."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from batch.errors import EXIT_USAGE
from tests.batch.conftest import run_cli
from tests.images import encode, rgb_pixels


def _conv_layers(version: Path) -> list[str]:
    """The Conv2D layers' names, read from model.json here (not by the code under test)."""
    layers = json.loads((version / "model.json").read_text())["config"]["layers"]
    return [layer["config"]["name"] for layer in layers if layer["class_name"] == "Conv2D"]


def test_one_grid_per_conv_layer(model_repository: Path, tmp_path: Path) -> None:
    image = tmp_path / "red.png"
    image.write_bytes(encode(rgb_pixels("red", np.random.default_rng(2))))
    names = _conv_layers(model_repository / "rgb" / "1")
    assert len(names) == 2  # the tiny net
    done = run_cli(
        "features", image, "--model", "rgb", "--repository", model_repository,
        "--out", tmp_path / "maps", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    pngs = sorted((tmp_path / "maps").glob("*.png"))
    assert [p.name for p in pngs] == [f"{i + 1:02d}-{n}.png" for i, n in enumerate(names)]
    for png in pngs:
        with Image.open(png) as drawn:  # 8 filters of 32x32 (16x16 after pooling): a 3x3 grid
            assert drawn.format == "PNG" and drawn.width >= 3 * 64
    one = run_cli(
        "features", image, "--model", "rgb", "--repository", model_repository,
        "--version", "1", "--layer", names[1], "--out", tmp_path / "one", cwd=tmp_path,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr
    assert [p.name for p in (tmp_path / "one").glob("*.png")] == [f"01-{names[1]}.png"]


def test_an_unknown_layer_lists_the_layers(model_repository: Path, tmp_path: Path) -> None:
    image = tmp_path / "red.png"
    image.write_bytes(encode(rgb_pixels("red", np.random.default_rng(3))))
    done = run_cli(
        "features", image, "--model", "rgb", "--repository", model_repository,
        "--layer", "nope", "--out", tmp_path / "maps", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == EXIT_USAGE
    assert "--layer 'nope'" in done.stderr
    assert all(name in done.stderr for name in _conv_layers(model_repository / "rgb" / "1"))
    assert not (tmp_path / "maps").exists()


@pytest.mark.parametrize(
    ("image", "model", "message"),
    [
        ("missing.png", "rgb", "missing.png is not a readable file"),
        ("broken.png", "rgb", "cannot decode"),
        ("red.png", "nope", "known models: gray, rgb"),
    ],
)
def test_a_missing_or_broken_image_or_unknown_model_exit_2(
    model_repository: Path, tmp_path: Path, image: str, model: str, message: str
) -> None:
    (tmp_path / "red.png").write_bytes(encode(rgb_pixels("red", np.random.default_rng(4))))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not an image")
    done = run_cli(
        "features", tmp_path / image, "--model", model, "--repository", model_repository,
        "--out", tmp_path / "maps", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == EXIT_USAGE, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("clfbatch: ")]
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert not (tmp_path / "maps").exists()

#!/usr/bin/env python
"""How much each shipped version's test accuracy drops when its inputs are prepared a little
differently from its manifest, as a client preprocessing on its own side would (issue 13 item 4).

Perturbations, each applied alone to every test image of the task's dataset:
  lanczos / box    another resize filter than the manifest's (the other two if it is one of them)
  shift+1 / shift-1  the resized image moved one pixel right and down (left and up), edges repeated
  jpeg75           the decoded image re-encoded as JPEG at quality 75 before resizing
  bright+10 / bright-10  brightness scaled by 1.10 / 0.90 before resizing

    python scripts/robustness.py [--repository trained] [--models mnist,cifar10] [--json FILE]

Prints, per version, the manifest's accuracy on the test split and the drop in points under each
perturbation with their average; the goal is an average drop of at most 1 point.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import numpy as np  # noqa: E402
from PIL import Image, ImageEnhance  # noqa: E402
from training.data import find_root, list_split  # noqa: E402

from serve.loader import Classifier, load  # noqa: E402
from serve.manifest import Preprocessing  # noqa: E402
from serve.preprocess import convert_mode, decode, resize, scale  # noqa: E402
from serve.repository import ModelVersion, scan  # noqa: E402

Source = Callable[[Image.Image], Image.Image]  # changes the decoded image before resizing
Pixels = Callable[[np.ndarray], np.ndarray]  # changes the resized uint8 pixels


@dataclasses.dataclass(frozen=True)
class Perturbation:
    name: str
    source: Source | None = None
    pixels: Pixels | None = None
    interpolation: str | None = None


def _jpeg(quality: int) -> Source:
    def reencode(image: Image.Image) -> Image.Image:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality)
        return Image.open(io.BytesIO(buffer.getvalue())).convert(image.mode)

    return reencode


def _brightness(factor: float) -> Source:
    return lambda image: ImageEnhance.Brightness(image).enhance(factor)


def _shift(step: int) -> Pixels:
    """Move the picture `step` pixels right and down (negative: left and up), repeating edges."""

    def move(pixels: np.ndarray) -> np.ndarray:
        padded = np.pad(pixels, ((abs(step),) * 2, (abs(step),) * 2, (0, 0)), mode="edge")
        start = abs(step) - step
        return padded[start : start + pixels.shape[0], start : start + pixels.shape[1]]

    return move


def perturbations(pre: Preprocessing) -> list[Perturbation]:
    """The perturbations for a version with preprocessing `pre` (filters other than its own)."""
    others = [f for f in ("lanczos", "box", "bilinear") if f != pre.interpolation][:2]
    return [
        *(Perturbation(name, interpolation=name) for name in others),
        Perturbation("shift+1", pixels=_shift(1)),
        Perturbation("shift-1", pixels=_shift(-1)),
        Perturbation("jpeg75", source=_jpeg(75)),
        Perturbation("bright+10", source=_brightness(1.10)),
        Perturbation("bright-10", source=_brightness(0.90)),
    ]


def prepare(data: bytes, pre: Preprocessing, change: Perturbation | None) -> np.ndarray:
    """One image's model input: the manifest's steps (serve.preprocess), with `change` applied."""
    image = convert_mode(decode(data), pre.color_mode)
    if change is not None and change.source is not None:
        image = change.source(image)
    if change is not None and change.interpolation is not None:
        pre = dataclasses.replace(pre, interpolation=change.interpolation)  # type: ignore[arg-type]
    pixels = np.asarray(resize(image, pre), dtype=np.uint8)
    pixels = pixels[:, :, np.newaxis] if pixels.ndim == 2 else pixels
    if change is not None and change.pixels is not None:
        pixels = change.pixels(pixels)
    return scale(pixels, pre)


def accuracy(
    classifier: Classifier,
    pre: Preprocessing,
    files: list[bytes],
    labels: np.ndarray,
    change: Perturbation | None,
) -> float:
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        inputs = np.stack(list(pool.map(lambda data: prepare(data, pre, change), files)))
    predicted = np.concatenate(
        [classifier.predict(inputs[i : i + 256]).argmax(axis=1) for i in range(0, len(inputs), 256)]
    )
    return float(np.mean(predicted == labels))


def evaluate(version: ModelVersion, data_root: Path) -> dict[str, float]:
    """{"baseline": accuracy, perturbation name: accuracy, ...} on the test split."""
    classes, found = list_split(find_root(data_root) / "test")
    if classes != version.manifest.classes:
        raise SystemExit(f"{data_root}: classes {classes} differ from the manifest's")
    files = [path.read_bytes() for path, _ in found]
    labels = np.array([label for _, label in found])
    pre = version.manifest.preprocessing
    classifier = load(version)
    result = {"baseline": accuracy(classifier, pre, files, labels, None)}
    for change in perturbations(pre):
        result[change.name] = accuracy(classifier, pre, files, labels, change)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", type=Path, default=ROOT / "trained")
    parser.add_argument("--datasets", type=Path, default=ROOT.parent / "shared" / "datasets",
                        help="folder of <task>.tar.gz archives (or <task>/ folders)")  # fmt: skip
    parser.add_argument("--models", help="comma-separated model names (default: all)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    wanted = set(args.models.split(",")) if args.models else None
    results: dict[str, dict[str, float]] = {}
    for name, versions in sorted(scan(args.repository).items()):
        if wanted is not None and name not in wanted:
            continue
        for version in versions:
            task = version.manifest.training.get("task_spec", name)
            data = next((p for p in (args.datasets / f"{task}.tar.gz", args.datasets / task)
                         if p.exists()), None)  # fmt: skip
            if data is None:
                print(f"{name} v{version.version}: no dataset {task} in {args.datasets}; skipped")
                continue
            figures = evaluate(version, data)
            results[f"{name}/{version.version}"] = figures
            drops = {
                k: 100 * (figures["baseline"] - v) for k, v in figures.items() if k != "baseline"
            }
            mean = sum(drops.values()) / len(drops)
            cells = "  ".join(f"{k} {v:+.2f}" for k, v in drops.items())
            print(f"{name} v{version.version}: {100 * figures['baseline']:.2f}%  drop (points): "
                  f"{cells}  average {mean:+.2f}", flush=True)  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python
"""`make bench-batch`: clfbatch's images/s against the model's own limit and a tutorial loop.

On the CIFAR-10 test split (10,000 JPEGs, unpacked once from ../shared/datasets into the cache,
never into the repository) it measures, in one process:

1. the inference limit: the model's signature on preloaded, preprocessed arrays, per batch size;
2. the clfbatch pipeline (`batch.runner.run_folder`: walk, read + decode in a thread pool
   overlapping inference, CSV report, metrics), and the same pipeline with tf.data doing the
   reading instead of the thread pool;
3. a tutorial-style loop: Pillow open + `model.predict` on one image at a time (300 files).

    .venv/bin/python scripts/bench_batch.py [--limit 2000] [--model cifar10] [--repository trained]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import numpy as np  # noqa: E402
from training.data import extract_archive, find_root  # noqa: E402

from batch.backends import LocalBackend  # noqa: E402
from batch.pipeline import ImageFile, classify_files, walk_images  # noqa: E402
from batch.reader import read_image  # noqa: E402
from batch.runner import RunSettings, run_folder  # noqa: E402
from serve.repository import resolve  # noqa: E402

ARCHIVE = ROOT.parent / "shared" / "datasets" / "cifar10.tar.gz"


def test_split(archive: Path, limit: int | None, scratch: Path) -> Path:
    """The test split's folder, or a folder of `limit` symlinks sampled from it."""
    folder = find_root(extract_archive(archive)) / "test"
    if not limit:
        return folder
    files = [path for _, path in walk_images(folder)]
    sample = scratch / "sample"
    for path in random.Random(0).sample(files, min(limit, len(files))):
        link = sample / path.parent.name / path.name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(path)
    return sample


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def inference_limit(backend: LocalBackend, inputs: np.ndarray) -> dict[int, float]:
    """images/s of the bare model call on preloaded arrays, per batch size (best of 2 passes)."""
    results = {}
    for size in (32, 64, 128, 256, 512):
        best = 0.0
        for _ in range(2):
            started = time.perf_counter()
            for start in range(0, len(inputs), size):
                backend.classify(inputs[start : start + size])
            best = max(best, rate(len(inputs), time.perf_counter() - started))
        results[size] = best
    return results


def tfdata_rows(backend: LocalBackend, folder: Path, batch_size: int) -> Iterator[int]:
    """The same reading + preprocessing, parallelised by tf.data instead of a thread pool."""
    import tensorflow as tf

    paths = [str(path) for _, path in walk_images(folder)]
    pre = backend.preprocessing

    def load(path: tf.Tensor) -> np.ndarray:
        return read_image(Path(path.numpy().decode()), pre)

    dataset = (
        tf.data.Dataset.from_tensor_slices(paths)
        .map(
            lambda p: tf.py_function(load, [p], tf.float32),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        .batch(batch_size)
        .prefetch(2)
    )
    for batch in dataset:
        yield len(backend.classify(batch.numpy()))


def tutorial_loop(version_path: Path, files: list[Path], shape: tuple[int, int, int]) -> float:
    """images/s of the tutorials' way: Pillow open, numpy, /255, `model.predict` per image."""
    import keras
    from PIL import Image

    model = keras.Sequential([keras.layers.TFSMLayer(str(version_path), "serving_default")])
    model.predict(np.zeros((1, *shape), np.float32), verbose=0)  # tracing is not timed
    mode = "L" if shape[2] == 1 else "RGB"
    started = time.perf_counter()
    for path in files:
        image = Image.open(path).convert(mode).resize((shape[1], shape[0]))
        x = np.asarray(image, dtype=np.float32).reshape(1, *shape) / 255.0
        model.predict(x, verbose=0)
    return rate(len(files), time.perf_counter() - started)


def timed(label: str, action: Callable[[], int]) -> float:
    started = time.perf_counter()
    count = action()
    speed = rate(count, time.perf_counter() - started)
    print(f"  {label:<44} {speed:>9,.0f} images/s  ({count} images)", flush=True)
    return speed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, default=ARCHIVE)
    parser.add_argument("--limit", type=int, default=None, help="sample this many test images")
    parser.add_argument("--tutorial-files", type=int, default=300)
    parser.add_argument("--model", default="cifar10")
    parser.add_argument("--version", type=int, default=None)
    parser.add_argument("--repository", type=Path, default=ROOT / "trained")
    parser.add_argument("--workers", type=int, default=None, help="pipeline reader threads")
    parser.add_argument("--no-tfdata", action="store_true", help="skip the tf.data comparison")
    args = parser.parse_args()
    if not args.archive.is_file():
        sys.exit(f"bench-batch: {args.archive} not found (the CIFAR-10 archive)")
    version = resolve(args.repository, args.model, args.version)
    backend = LocalBackend(version)
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as scratch_name:
        scratch = Path(scratch_name)
        folder = test_split(args.archive, args.limit, scratch)
        files = [path for _, path in walk_images(folder)]
        print(
            f"bench-batch: {args.model} v{version.version} ({version.manifest.architecture}, "
            f"input {version.manifest.input_shape}), {len(files)} images in {folder}, "
            f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        inputs = np.stack([read_image(path, backend.preprocessing) for path in files])
        limits = inference_limit(backend, inputs)
        best_size = max(limits, key=lambda size: limits[size])
        listing = ", ".join(f"{size}: {speed:,.0f}" for size, speed in limits.items())
        print(
            f"  {'inference limit (preloaded arrays)':<44} {limits[best_size]:>9,.0f} images/s"
            f"  (best batch {best_size}; {listing})",
            flush=True,
        )

        def pipeline() -> int:
            options = RunSettings(
                folder, backend.model, out=scratch / "report.csv", quiet=True, workers=args.workers
            )
            return run_folder(options, backend, warn=print).tally.files

        ours = timed("clfbatch pipeline (thread pool, report, metrics)", pipeline)

        def rows_only() -> int:
            items = (ImageFile(path, relative) for relative, path in walk_images(folder))
            return sum(1 for _ in classify_files(backend, items, workers=args.workers))

        pool = timed("  rows only (thread pool, no report)", rows_only)

        def decode_only() -> int:
            with ThreadPoolExecutor(args.workers or min(4, os.cpu_count() or 1)) as readers:
                pre = backend.preprocessing
                return sum(1 for _ in readers.map(lambda p: read_image(p, pre), files))

        timed("  read + preprocess only (no model)", decode_only)
        if not args.no_tfdata:
            size = 128
            timed(
                "  rows only (tf.data + py_function)",
                lambda: sum(tfdata_rows(backend, folder, size)),
            )
        sample = random.Random(1).sample(files, min(args.tutorial_files, len(files)))
        tutorial = tutorial_loop(version.path, sample, version.manifest.input_shape)
        print(
            f"  {'tutorial loop (Pillow + model.predict each)':<44} {tutorial:>9,.0f} images/s"
            f"  ({len(sample)} images)",
            flush=True,
        )
        print(
            f"ratios: pipeline / inference limit = {ours / limits[best_size]:.0%} (goal >= 80%); "
            f"pipeline / tutorial loop = {ours / tutorial:.0f}x (goal >= 20x); "
            f"thread-pool rows / limit = {pool / limits[best_size]:.0%}"
        )


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""`make bench-batch`: `clfbatch run` against the bound the machine allows, per model.

On a model's test split (unpacked once from ../shared/datasets into the cache, never into the
repository), with the default version (what `clfbatch run --model M` uses), it measures in
one process:

1. read + preprocess alone on the pipeline's reader threads (all CPUs), and the model alone on
   those preloaded arrays at the pipeline's batch size (all CPUs);
2. their bound `1 / (1/decode + 1/model)`: decoding and the model share the same CPUs, so a
   pipeline of the two cannot beat it unless one of them alone leaves CPU idle;
3. `clfbatch run` itself (`batch.runner.run_folder`: walk, reader threads overlapping the model,
   CSV report, metrics, summary files) and its ratio to the bound;
4. for the first model: the rows alone (no report or summary files), the same rows with tf.data
   reading instead of the thread pool, and a tutorial-style loop (Pillow open + `model.predict`
   one image at a time, 300 files).

    .venv/bin/python scripts/bench_batch.py [--models cifar10 mnist] [--limit 2000]
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
from batch.pipeline import (  # noqa: E402
    ImageFile,
    classify_files,
    default_workers,
    preferred_batch_size,
    walk_images,
)
from batch.reader import read_image  # noqa: E402
from batch.runner import RunSettings, run_folder  # noqa: E402
from serve.manifest import Preprocessing  # noqa: E402
from serve.repository import resolve  # noqa: E402

DATASETS = ROOT.parent / "shared" / "datasets"


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


def decode_rate(files: list[Path], pre: Preprocessing, workers: int) -> tuple[float, np.ndarray]:
    """images/s of read + preprocess alone on `workers` threads (the pipeline's), and the arrays."""
    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as readers:
        arrays = list(readers.map(lambda path: read_image(path, pre), files))
    return rate(len(files), time.perf_counter() - started), np.stack(arrays)


def model_rate(backend: LocalBackend, inputs: np.ndarray, size: int) -> float:
    """images/s of the bare model call on preloaded arrays at the pipeline's batch size."""
    backend.classify(inputs[:size])  # warm-up: the first call of a shape is not timed
    started = time.perf_counter()
    for start in range(0, len(inputs), size):
        backend.classify(inputs[start : start + size])
    return rate(len(inputs), time.perf_counter() - started)


def measure(args: argparse.Namespace, model: str, scratch: Path, extras: bool) -> float:
    """Print one model's bound and pipeline rate; returns pipeline / bound."""
    archive = args.datasets / f"{model}.tar.gz"
    if not archive.is_file():
        sys.exit(f"bench-batch: {archive} not found (the {model} archive)")
    version = resolve(args.repository, model, None)
    backend = LocalBackend(version)
    pre = backend.preprocessing
    folder = test_split(archive, args.limit, scratch / model)
    files = [path for _, path in walk_images(folder)]
    workers = args.workers or default_workers()
    size = preferred_batch_size(pre)
    print(
        f"{model} v{version.version} ({version.manifest.architecture}, input "
        f"{version.manifest.input_shape}): {len(files)} test images, batch {size}, "
        f"{workers} reader threads, load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    decode, inputs = decode_rate(files, pre, workers)
    print(
        f"  {'read + preprocess alone (reader threads)':<46} {decode:>9,.0f} images/s", flush=True
    )
    inference = model_rate(backend, inputs, size)
    print(f"  {f'model alone (preloaded arrays, batch {size})':<46} {inference:>9,.0f} images/s")
    bound = 1 / (1 / decode + 1 / inference)
    print(f"  {'bound 1 / (1/decode + 1/model)':<46} {bound:>9,.0f} images/s", flush=True)

    def pipeline() -> int:
        report = scratch / f"{model}-report.csv"
        options = RunSettings(
            folder=folder, model=model, repository=args.repository, out=report, force=True,
            quiet=True, workers=args.workers,
        )  # fmt: skip
        return run_folder(options, backend, warn=print).tally.files

    ours = timed("clfbatch run (report, metrics, summary files)", pipeline)
    if extras:

        def rows_only() -> int:
            items = (ImageFile(path, relative) for relative, path in walk_images(folder))
            return sum(1 for _ in classify_files(backend, items, workers=args.workers))

        timed("  rows only (no report, no summary files)", rows_only)
        if not args.no_tfdata:
            timed(
                "  rows with tf.data + py_function instead",
                lambda: sum(tfdata_rows(backend, folder, size)),
            )
        sample = random.Random(1).sample(files, min(args.tutorial_files, len(files)))
        tutorial = tutorial_loop(version.path, sample, version.manifest.input_shape)
        print(
            f"  {'tutorial loop (Pillow + model.predict each)':<46} {tutorial:>9,.0f} images/s"
            f"  ({len(sample)} images): clfbatch run is {ours / tutorial:.0f}x (goal >= 20x)"
        )
    print(f"  clfbatch run / bound = {ours / bound:.0%} (goal >= 90%)", flush=True)
    backend.close()
    return ours / bound


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["cifar10", "mnist"])
    parser.add_argument("--datasets", type=Path, default=DATASETS)
    parser.add_argument("--limit", type=int, default=None, help="sample this many test images")
    parser.add_argument("--tutorial-files", type=int, default=300)
    parser.add_argument("--repository", type=Path, default=ROOT / "trained")
    parser.add_argument("--workers", type=int, default=None, help="reader threads")
    parser.add_argument("--no-tfdata", action="store_true", help="skip the tf.data comparison")
    args = parser.parse_args()
    print(f"bench-batch: {os.cpu_count()} CPUs, default version of each model", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as scratch_name:
        for index, model in enumerate(args.models):
            measure(args, model, Path(scratch_name), extras=index == 0)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

"""Training data: a `train/<class>/` + `test/<class>/` folder, its .tar.gz, or Keras.

Images go through `serve.preprocess` exactly as serving will see them. Unreadable files are
skipped and counted, never fatal.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from serve.errors import InvalidInput
from serve.manifest import Preprocessing
from serve.preprocess import IMAGE_SUFFIXES, preprocess_bytes, preprocess_pixels


class DataError(ValueError):
    """The data path is missing, empty or inconsistent; the message says how."""


@dataclass
class Split:
    images: np.ndarray  # float32 [N, H, W, C], already preprocessed
    labels: np.ndarray  # int32 [N]
    classes: tuple[str, ...]
    files: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def cache_dir() -> Path:
    base = os.environ.get("CLFSERVE_CACHE") or os.environ.get("XDG_CACHE_HOME")
    return Path(base) / "clfserve" if base else Path.home() / ".cache" / "clfserve"


def extract_archive(archive: Path) -> Path:
    """Unpack a dataset archive once into the cache (keyed by its size and mtime).

    It is unpacked into a private temporary folder and renamed into place, so processes that
    unpack the same archive at once (two trainings, parallel tests) never read a half-written
    file: the first rename wins and the others discard their copy.
    """
    stat = archive.stat()
    key = hashlib.sha256(f"{archive.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    target = cache_dir() / "datasets" / f"{archive.name.split('.')[0]}-{key.hexdigest()[:12]}"
    if (target / ".complete").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(staging, filter="data")
        (staging / ".complete").touch()
        if target.exists() and not (target / ".complete").exists():
            shutil.rmtree(target, ignore_errors=True)  # an older, interrupted unpack's leftover
        os.rename(staging, target)
    except (tarfile.TarError, EOFError) as exc:
        raise DataError(f"cannot unpack {archive}: {exc}") from exc
    except OSError as exc:
        if not (target / ".complete").exists():  # another process renamed its copy first
            raise DataError(f"cannot unpack {archive}: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def find_root(path: Path) -> Path:
    """The folder holding `train/` and `test/`: `path` itself or its single sub-folder."""
    if not path.exists():
        raise DataError(f"data path {path} does not exist")
    if path.is_file():
        if not path.name.endswith((".tar.gz", ".tgz", ".tar")):
            raise DataError(f"data path {path} is a file but not a .tar.gz archive")
        path = extract_archive(path)
    candidates = [path, *sorted(p for p in path.iterdir() if p.is_dir())]
    for candidate in candidates:
        if (candidate / "train").is_dir() and (candidate / "test").is_dir():
            return candidate
    raise DataError(f"{path} has no train/ and test/ class folders")


def list_split(split_dir: Path) -> tuple[tuple[str, ...], list[tuple[Path, int]]]:
    """Class folder names (sorted) and every image file with its class index."""
    classes = tuple(sorted(p.name for p in split_dir.iterdir() if p.is_dir()))
    if len(classes) < 2:
        raise DataError(f"{split_dir} needs at least two class folders, found {list(classes)}")
    files: list[tuple[Path, int]] = []
    for index, name in enumerate(classes):
        found = sorted(
            p for p in (split_dir / name).rglob("*") if p.is_file() and not p.name.startswith(".")
        )
        if not found:
            raise DataError(f"class folder {split_dir / name} is empty")
        files += [(p, index) for p in found]
    return classes, files


def _load_one(path: Path, pre: Preprocessing) -> np.ndarray | None:
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return None
    try:
        return preprocess_bytes(path.read_bytes(), pre)
    except (InvalidInput, OSError):
        return None


def load_split(split_dir: Path, pre: Preprocessing, *, workers: int = 4) -> Split:
    classes, files = list_split(split_dir)
    images = np.empty((len(files), *pre.input_shape), dtype=np.float32)
    labels = np.empty(len(files), dtype=np.int32)
    kept: list[str] = []
    skipped: list[str] = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(lambda item: _load_one(item[0], pre), files, chunksize=64)
        for (path, label), array in zip(files, results, strict=True):
            if array is None:
                skipped.append(str(path))
                continue
            images[len(kept)] = array
            labels[len(kept)] = label
            kept.append(str(path.relative_to(split_dir)))
    if not kept:
        raise DataError(f"no readable image in {split_dir}")
    return Split(images[: len(kept)], labels[: len(kept)], classes, kept, skipped)


def load_folder(path: Path, pre: Preprocessing) -> tuple[Split, Split, str]:
    """Train and test splits of a dataset folder or archive, and a fingerprint of the file list."""
    root = find_root(path)
    train = load_split(root / "train", pre)
    test = load_split(root / "test", pre)
    if train.classes != test.classes:
        raise DataError(
            f"train and test class folders differ: train {list(train.classes)}, "
            f"test {list(test.classes)}"
        )
    digest = hashlib.sha256()
    for stat_source in (root / "train", root / "test"):
        for name in sorted(str(p.relative_to(root)) for p in stat_source.rglob("*") if p.is_file()):
            digest.update(name.encode() + b"\0")
            digest.update(str((root / name).stat().st_size).encode())
    return train, test, f"sha256:{digest.hexdigest()[:16]}"


def load_keras(
    dataset: str, pre: Preprocessing, classes: tuple[str, ...]
) -> tuple[Split, Split, str]:
    """mnist or cifar10 through Keras' downloader (needs internet)."""
    import keras

    loader = {"mnist": keras.datasets.mnist, "cifar10": keras.datasets.cifar10}[dataset]
    (x_train, y_train), (x_test, y_test) = loader.load_data()

    def split(x: np.ndarray, y: np.ndarray) -> Split:
        images = np.stack([preprocess_pixels(image, pre) for image in x])
        return Split(images, y.reshape(-1).astype(np.int32), classes)

    return split(x_train, y_train), split(x_test, y_test), f"keras.datasets.{dataset}"


def validation_split(split: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """A stratified hold-out of `fraction` of each class, for every training decision."""
    rng = np.random.default_rng(seed)
    val_index: list[int] = []
    for label in np.unique(split.labels):
        members = np.flatnonzero(split.labels == label)
        take = max(1, round(len(members) * fraction))
        val_index += rng.choice(members, size=take, replace=False).tolist()
    mask = np.zeros(len(split.labels), dtype=bool)
    mask[val_index] = True
    train = Split(split.images[~mask], split.labels[~mask], split.classes)
    val = Split(split.images[mask], split.labels[mask], split.classes)
    return train, val

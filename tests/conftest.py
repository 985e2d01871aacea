"""Shared fixtures: tiny models trained once per session into a temporary model repository,
synthetic images, replayable seeds, and a guard that fails a test which leaks a thread."""

from __future__ import annotations

import atexit
import os
import random
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.images import write_dataset

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Training checkpoints and converted runtimes go to a cache of this session's own (inherited by
# the servers and CLIs tests start): never the user's, and never shared with a concurrent run
# that trains the same tiny model (its fresh start would delete our checkpoint directory).
os.environ["CLFSERVE_CACHE"] = tempfile.mkdtemp(prefix="clf-test-cache-")
atexit.register(shutil.rmtree, os.environ["CLFSERVE_CACHE"], True)
REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATASETS = REPO_ROOT.parent / "shared" / "datasets"


def train_tiny(repository: Path, name: str, kind: str, data_root: Path, seed: int = 0) -> Path:
    """Train the `tiny` architecture for a few epochs on a synthetic folder; returns the version."""
    from training.run import RunOptions, run
    from training.tasks import get_task

    task = get_task("mnist" if kind == "gray" else "cifar10")
    arch = task.arch("tiny")
    options = RunOptions(
        task=task,
        architecture=arch,
        preprocessing=task.preprocessing_for(arch),
        data=write_dataset(data_root, kind, seed=seed),
        epochs=4,
        batch_size=16,
        learning_rate=0.01,
        patience=4,
        seed=seed,
        val_fraction=0.1,
        name=name,
        repository=repository,
    )
    path, _ = run(options)
    return path


@pytest.fixture(scope="session")
def model_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only repository: `gray/1` (28x28x1, dark/light) and `rgb/1` (32x32x3, blue/green/red).

    Copy it (see `repository_copy`) before changing anything in it.
    """
    root = tmp_path_factory.mktemp("repository")
    data = tmp_path_factory.mktemp("data")
    train_tiny(root, "gray", "gray", data / "gray")
    train_tiny(root, "rgb", "rgb", data / "rgb")
    return root


@pytest.fixture
def repository_copy(model_repository: Path, tmp_path: Path) -> Path:
    """A private, writable copy of the session repository."""
    target = tmp_path / "repository"
    shutil.copytree(model_repository, target)
    return target


# Where a leaked daemon thread (a watchdog observer, a worker pool, a batcher's model thread)
# fails the test as well.
DAEMON_CHECKED = (REPO_ROOT / "tests" / "batch", REPO_ROOT / "tests" / "serve")


def replayable_seed() -> int:
    """`CLF_TEST_SEED` if set, else a fresh random seed; put it in failure messages to replay."""
    return int(os.environ.get("CLF_TEST_SEED") or random.randrange(1 << 30))


def leaked_threads(before: set[threading.Thread], *, daemons: bool, wait: float = 5) -> list[str]:
    """Threads started since `before` that are still running after `wait` seconds of joining
    (daemon threads only if `daemons`)."""
    leaked = [
        t
        for t in threading.enumerate()
        if t not in before
        and t.is_alive()
        and (daemons or not t.daemon)
        and not t.name.endswith("(_poll_wrapper)")  # grpc.aio's poller: one per process, for good
        and type(t).__name__ != "_DummyThread"  # a C thread (grpc core) that called into Python
    ]
    for thread in leaked:
        thread.join(timeout=wait)
    return [t.name for t in leaked if t.is_alive()]


@pytest.fixture(autouse=True)
def no_leaked_threads(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that leaves a thread of its own running (daemon threads too, where checked)."""
    before = set(threading.enumerate())
    yield
    daemons = any(request.node.path.is_relative_to(root) for root in DAEMON_CHECKED)
    still = leaked_threads(before, daemons=daemons)
    assert not still, f"test leaked threads: {still}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if SHARED_DATASETS.is_dir():
        return
    skip = pytest.mark.skip(reason=f"needs the shared datasets at {SHARED_DATASETS} (absent)")
    for item in items:
        if "shared" in item.keywords:
            item.add_marker(skip)

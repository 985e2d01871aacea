"""Hot reload under load: versions appear, break and disappear while 16 clients keep asking."""

from __future__ import annotations

import errno
import logging
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import serve.registry
from serve.client import Client
from serve.repository import complete_versions
from serve.versions import VersionState
from tests.images import encode, gray_pixels
from tests.serve.conftest import ServerThread, flat_png

CLIENTS = 16


class Load:
    """`CLIENTS` threads classifying with the default version until stopped."""

    def __init__(self, target: str) -> None:
        rng = np.random.default_rng(2)
        self._images = [encode(gray_pixels(label, rng)) for label in ("dark", "light")]
        self._target = target
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.versions: Counter[int] = Counter()
        self.last: dict[int, int] = {}
        self.failures: list[BaseException] = []
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(CLIENTS)]

    def _run(self, index: int) -> None:
        try:
            with Client(self._target, timeout=30) as client:
                while not self._stop.is_set():
                    self._classify(client, index)
        except BaseException as exc:  # opening or closing the channel: a failure to report too
            with self._lock:
                self.failures.append(exc)

    def _classify(self, client: Client, index: int) -> None:
        try:
            version = client.classify("gray", self._images[index % 2 :][:1]).version
        except BaseException as exc:
            with self._lock:
                self.failures.append(exc)
            return
        with self._lock:
            self.versions[version] += 1
            self.last[index] = version

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.versions.values()) + len(self.failures)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def wait_for_more(self, count: int, timeout: float = 60) -> None:
        target = self.total + count
        wait_until(lambda: self.total >= target, timeout, f"{count} more requests")


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def drop_in(source: Path, model_dir: Path, version: int) -> Path:
    """Copy a version directory in under a hidden name, then rename it: atomic, like training."""
    staging = model_dir / f".incoming-{version}"
    shutil.copytree(source, staging)
    target = model_dir / str(version)
    staging.rename(target)
    return target


@pytest.fixture(scope="module")
def gray_v2(two_versions: Path) -> Path:
    """A second, differently seeded `gray` version (from the session's `two_versions`)."""
    return two_versions / "gray" / "2"


def versions_of(client: Client) -> dict[int, VersionState]:
    return {v.version: v.state for v in client.get_model("gray").versions}


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["latest:1", "all"])
def test_hot_reload_under_load(
    repository_copy: Path, gray_v2: Path, start_server: Callable[..., ServerThread], policy: str
) -> None:
    server = start_server(repository_copy, version_policy=policy)
    with Client(server.target) as client:
        client.wait_ready(60)
    with Client(server.target) as client, Load(server.target) as load:
        load.wait_for_more(100)
        drop_in(gray_v2, repository_copy / "gray", 2)
        wait_until(lambda: client.get_model("gray").default_version == 2, 60, "version 2")
        load.wait_for_more(100)
        wait_until(lambda: set(load.last.values()) == {2}, 30, "every client on version 2")
        shutil.rmtree(repository_copy / "gray" / "1")
        wait_until(lambda: versions_of(client) == {2: VersionState.AVAILABLE}, 30, "v1 gone")
        load.wait_for_more(100)
    assert not load.failures, load.failures[:3]
    assert load.versions[1] > 0 and load.versions[2] > 0
    assert set(load.last.values()) == {2}
    with Client(server.target) as client:
        assert client.classify("gray", [load._images[0]]).version == 2
        assert client.get_model("rgb").default_version == 1


@pytest.mark.slow
def test_broken_versions_fail_visibly_and_old_keeps_serving(
    repository_copy: Path, start_server: Callable[..., ServerThread]
) -> None:
    model_dir = repository_copy / "gray"
    server = start_server(repository_copy)
    with Client(server.target) as client:
        client.wait_ready(60)
    with Client(server.target) as client, Load(server.target) as load:
        load.wait_for_more(50)
        corrupt = model_dir / ".broken"
        shutil.copytree(model_dir / "1", corrupt)
        (corrupt / "saved_model.pb").write_bytes(b"this is not a SavedModel")
        corrupt.rename(model_dir / "2")
        bad_manifest = model_dir / ".bad-manifest"
        shutil.copytree(model_dir / "1", bad_manifest)
        (bad_manifest / "manifest.json").write_text("{ not json")
        bad_manifest.rename(model_dir / "3")
        wait_until(
            lambda: (
                versions_of(client).get(2) is VersionState.FAILED
                and versions_of(client).get(3) is VersionState.FAILED
            ),
            60,
            "versions 2 and 3 to fail",
        )
        load.wait_for_more(100)
        info = client.get_model("gray")
    assert not load.failures, load.failures[:3]
    assert set(load.versions) == {1}
    assert info.default_version == 1
    reasons = {v.version: v.reason for v in info.versions}
    assert reasons[1] == "" and "ManifestError" in reasons[3] and reasons[2]
    assert [v.state for v in info.versions if v.version == 1] == [VersionState.AVAILABLE]


def test_a_failed_rescan_is_logged_and_retried(
    model_repository: Path,
    start_server: Callable[..., ServerThread],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A rescan the repository's file system fails (EIO, as a network mount can) leaves the
    loaded versions serving, and the next poll scans again."""
    server = start_server(model_repository, watch=False, poll_interval=0.2)
    scans = Counter[str]()

    def flaky(root: Path) -> dict[str, dict[int, Path]]:
        if not scans["failed"]:
            scans["failed"] += 1
            raise OSError(errno.EIO, "Input/output error", str(root))
        scans["after"] += 1
        return complete_versions(root)

    with Client(server.target) as client:
        client.wait_ready(60)
        with caplog.at_level(logging.ERROR, logger="serve"):
            monkeypatch.setattr(serve.registry, "complete_versions", flaky)
            wait_until(lambda: scans["after"] > 0, 60, "a rescan after the failed one")
        assert client.classify("gray", [flat_png(40)]).version == 1
    [record] = [r for r in caplog.records if "sync failed" in r.getMessage()]
    assert (record.name, record.levelname) == ("serve", "ERROR")
    assert record.getMessage() == "repository sync failed; retrying in 0.2 s"
    assert record.exc_info is not None and isinstance(record.exc_info[1], OSError)


def test_a_failed_first_scan_is_retried_until_the_server_is_ready(
    model_repository: Path,
    start_server: Callable[..., ServerThread],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The first scan failing (the repository's mount not up yet) does not leave the server
    not-ready for good: it is logged, and the next poll loads the models."""
    scans = Counter[str]()

    def flaky(root: Path) -> dict[str, dict[int, Path]]:
        scans["tried"] += 1
        if scans["tried"] == 1:
            raise OSError(errno.EIO, "Input/output error", str(root))
        return complete_versions(root)

    monkeypatch.setattr(serve.registry, "complete_versions", flaky)
    with caplog.at_level(logging.ERROR, logger="serve"):
        server = start_server(model_repository, watch=False, poll_interval=0.2)
        with Client(server.target) as client:
            client.wait_ready(60)
            assert client.classify("gray", [flat_png(40)]).version == 1
    failures = [r.getMessage() for r in caplog.records if "sync failed" in r.getMessage()]
    assert failures == ["repository sync failed; retrying in 0.2 s"] and scans["tried"] >= 2

"""Version labels from manifests (`"labels": ["fast"]`): resolved by the server on every protocol
and by `clfbatch`, to the newest version carrying the label."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
import tritonclient.grpc as triton
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)
from tritonclient.utils import InferenceServerException

from serve.client import Client
from serve.errors import ManifestError, VersionNotFound
from serve.manifest import Manifest
from serve.repository import resolve
from serve.version_labels import assigned, check_label, pick
from serve.versions import VersionState
from tests.batch.conftest import run_cli
from tests.batch.watch.helpers import Daemon, report_rows, wait_rows
from tests.serve.conftest import ServerThread, make_settings
from tests.serve.test_tfserving import PNG, local_probabilities, probabilities, request

# version -> the labels its manifest carries: "fast" names the older version, "tiny" the newer
LABELS = {1: ["fast", "tiny"], 2: ["accurate", "tiny"]}


def test_pick_resolves_server_and_manifest_labels() -> None:
    versions = [(1, ("fast",)), (4, ("accurate",)), (3, ("fast", "x"))]
    assert pick("latest", versions) == 4
    assert pick("stable", versions) == 4
    assert pick("previous", versions) == 3
    assert pick("fast", versions) == 3  # the newest carrying it
    assert pick("accurate", versions) == 4
    assert pick("nope", versions) is None
    assert pick("previous", [(1, ())]) is None
    assert assigned(versions) == {4: ["stable", "latest", "accurate"], 3: ["previous", "fast", "x"]}


def test_the_default_label_picks_what_unpinned_requests_and_stable_get() -> None:
    versions = [(1, ("default",)), (3, ("default", "accurate")), (4, ("fast",))]
    assert pick(None, versions) == 3  # the newest carrying `default`, not the newest
    assert pick("", versions) == 3
    assert pick("stable", versions) == 3
    assert pick("latest", versions) == 4
    assert pick(None, [(1, ()), (2, ("fast",))]) == 2  # no `default` anywhere: the newest
    assert pick(None, []) is None
    assert assigned(versions) == {
        3: ["stable", "previous", "accurate", "default"],
        4: ["latest", "fast"],
    }


@pytest.mark.parametrize("bad", ["stable", "previous", "Fast", "1", "", "a b", "x" * 65])
def test_a_manifest_label_must_be_a_plain_name_not_the_servers_own(bad: str) -> None:
    with pytest.raises(ValueError, match="version label"):
        check_label(bad)


def _labelled_repository(
    two_versions: Path, root: Path, labelling: dict[int, list[str]] = LABELS
) -> Path:
    """gray/1 and gray/2 of `two_versions` (different weights), with `labelling`'s labels in
    their manifests."""
    for version, labels in labelling.items():
        target = root / "gray" / str(version)
        shutil.copytree(two_versions / "gray" / str(version), target)
        manifest = json.loads((target / "manifest.json").read_text())
        manifest["labels"] = labels
        (target / "manifest.json").write_text(json.dumps(manifest))
    return root


@pytest.fixture(scope="module")
def labelled(two_versions: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _labelled_repository(two_versions, tmp_path_factory.mktemp("labelled"))


def test_manifest_labels_round_trip_and_bad_ones_are_refused(labelled: Path, tmp_path) -> None:
    manifest = Manifest.read(labelled / "gray" / "1" / "manifest.json")
    assert manifest.labels == ("fast", "tiny")
    assert Manifest.from_dict(manifest.to_dict()).labels == ("fast", "tiny")
    data = manifest.to_dict() | {"labels": ["previous"]}
    with pytest.raises(ManifestError, match="server's own"):
        Manifest.from_dict(data)


def test_the_repository_resolves_labels_for_local_use(labelled: Path) -> None:
    assert resolve(labelled, "gray", label="fast").version == 1
    assert resolve(labelled, "gray", label="tiny").version == 2
    assert resolve(labelled, "gray", label="previous").version == 1
    assert resolve(labelled, "gray").version == 2
    with pytest.raises(VersionNotFound, match="'slow'"):
        resolve(labelled, "gray", label="slow")


@pytest.fixture(scope="module")
def server(labelled: Path):
    running = ServerThread(make_settings(labelled, version_policy="all")).start()
    with Client(running.target) as client:
        client.wait_ready(60)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def expected(labelled: Path) -> dict[int, np.ndarray]:
    by_version = {v: local_probabilities(labelled, "gray", v, [PNG]) for v in LABELS}
    assert np.abs(by_version[1] - by_version[2]).max() > 1e-3, "versions 1 and 2 must differ"
    return by_version


def test_our_api_answers_with_the_labelled_version(server: ServerThread, expected) -> None:
    with Client(server.target) as client:
        for label, version in {"fast": 1, "tiny": 2, "accurate": 2, "stable": 2}.items():
            result = client.classify("gray", [PNG], label=label)
            assert result.version == version, label
            got = np.asarray([result.predictions[0].probabilities])
            np.testing.assert_allclose(got, expected[version], atol=1e-5, err_msg=label)
        with pytest.raises(VersionNotFound, match="slow"):
            client.classify("gray", [PNG], label="slow")
        info = client.get_model("gray")
    assert {v.version: set(v.labels) for v in info.versions} == {
        2: {"stable", "latest", "accurate", "tiny"},
        1: {"previous", "fast"},
    }


def test_tf_serving_version_label_and_status(server: ServerThread, expected) -> None:
    strings = tf.make_tensor_proto([PNG])
    with grpc.insecure_channel(server.target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(request("gray", strings, version_label="fast"), timeout=30)
        assert response.model_spec.version.value == 1
        np.testing.assert_allclose(probabilities(response), expected[1], atol=1e-5)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Predict(request("gray", strings, version_label="slow"), timeout=30)
        # what TensorFlow Serving answers for a label it does not know
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "Unrecognized servable version label: slow" in str(caught.value.details())
        status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
            get_model_status_pb2.GetModelStatusRequest(
                model_spec={"name": "gray", "version_label": "fast"}
            ),
            timeout=30,
        )
    assert [s.version for s in status.model_version_status] == [1]


def test_kserve_model_version_may_be_a_label(server: ServerThread, expected) -> None:
    client = triton.InferenceServerClient(server.target)
    try:
        tensor = triton.InferInput("images", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([PNG], dtype=np.object_))
        result = client.infer("gray", [tensor], model_version="fast")
        assert result.get_response().model_version == "1"
        np.testing.assert_allclose(result.as_numpy("probabilities"), expected[1], atol=1e-5)
        with pytest.raises(InferenceServerException) as caught:
            client.infer("gray", [tensor], model_version="slow")
        assert caught.value.status() == "StatusCode.NOT_FOUND"
    finally:
        client.close()


@pytest.mark.parametrize("where", ["local", "server"])
def test_clfbatch_run_version_label(labelled: Path, server: ServerThread, tmp_path, where) -> None:
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.png").write_bytes(PNG)
    target = ["--server", server.target] if where == "server" else ["--repository", labelled]
    out = tmp_path / "report.csv"
    done = run_cli("run", images, "--model", "gray", "--version-label", "fast", *target,
                     "--out", out, "--labels", "none", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "gray v1:" in done.stdout, done.stdout
    both = run_cli("run", images, "--model", "gray", "--version", "2", "--version-label",
                     "fast", *target, "--out", tmp_path / "x.csv", cwd=tmp_path)  # fmt: skip
    assert both.returncode == 2 and "not both" in both.stderr
    unknown = run_cli("run", images, "--model", "gray", "--version-label", "slow", *target,
                        "--out", tmp_path / "y.csv", cwd=tmp_path)  # fmt: skip
    assert unknown.returncode == 2 and "'slow'" in unknown.stderr, unknown.stderr


def test_clfbatch_watch_version_label(labelled: Path, tmp_path: Path) -> None:
    """The watcher classifies with the version the label names (v1 here, not the newest v2)."""
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    args = ("--model", "gray", "--repository", labelled, "--version-label", "fast")
    with Daemon(inbox, out, *args, log=tmp_path / "watch.log") as daemon:
        daemon.wait_ready()
        (inbox / "a.png").write_bytes(PNG)
        wait_rows(out / "labels.csv", 1, daemon)
        assert daemon.stop() == 0
    assert [row["version"] for row in report_rows(out / "labels.csv")] == ["1"]


# gray/1 is the default version although gray/2 is newer (a faster, less accurate one, say)
AVAILABLE = VersionState.AVAILABLE
DEFAULT_LABELS = {1: ["default"], 2: ["fast"]}


@pytest.fixture(scope="module")
def pinned_default(two_versions: Path, tmp_path_factory: pytest.TempPathFactory):
    root = _labelled_repository(two_versions, tmp_path_factory.mktemp("default"), DEFAULT_LABELS)
    running = ServerThread(make_settings(root)).start()  # latest:1, which keeps the default too
    with Client(running.target) as client:
        client.wait_ready(60)
    yield root, running
    running.stop()


def test_unpinned_requests_get_the_default_version_on_every_protocol(pinned_default) -> None:
    root, server = pinned_default
    assert resolve(root, "gray").version == 1
    assert resolve(root, "gray", label="latest").version == 2
    with Client(server.target) as client:
        assert client.classify("gray", [PNG]).version == 1
        assert client.classify("gray", [PNG], label="stable").version == 1
        assert client.classify("gray", [PNG], label="latest").version == 2
        info = client.get_model("gray")
    assert info.default_version == 1
    assert {v.version: v.state for v in info.versions} == {1: AVAILABLE, 2: AVAILABLE}
    assert {v.version: set(v.labels) for v in info.versions} == {
        1: {"stable", "previous", "default"},
        2: {"latest", "fast"},
    }
    strings = tf.make_tensor_proto([PNG])
    with grpc.insecure_channel(server.target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        assert stub.Predict(request("gray", strings), timeout=30).model_spec.version.value == 1
    triton_client = triton.InferenceServerClient(server.target)
    try:
        tensor = triton.InferInput("images", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([PNG], dtype=np.object_))
        assert triton_client.infer("gray", [tensor]).get_response().model_version == "1"
    finally:
        triton_client.close()


@pytest.mark.parametrize("where", ["local", "server"])
def test_clfbatch_run_uses_the_default_version(pinned_default, tmp_path, where) -> None:
    root, server = pinned_default
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.png").write_bytes(PNG)
    target = ["--server", server.target] if where == "server" else ["--repository", root]
    done = run_cli("run", images, "--model", "gray", *target, "--out", tmp_path / "r.csv",
                   "--labels", "none", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "gray v1:" in done.stdout, done.stdout

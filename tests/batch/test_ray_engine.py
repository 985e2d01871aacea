"""`clfbatch run --engine ray` against `--engine local`: real CLI subprocesses on a real Ray.

One Ray instance (2 CPUs, loopback only, a token of its own) runs in a process of this module
for the tests that pass `--address`; the killed-actor test lets the CLI start its own.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from batch.ray_engine import ray_failure
from tests.batch.conftest import cli_env, run_cli, write_rgb_folder
from tests.images import encode, rgb_pixels

pytestmark = pytest.mark.slow  # Ray and the model actors start in ~20-40 s on 2 busy cores

# Loopback only (Ray's single-node mode) and token authentication with this module's token.
RAY_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": "token",
    "RAY_AUTH_TOKEN": uuid.uuid4().hex,
}
_HEAD = """
import sys, ray
ray.init(num_cpus=2, include_dashboard=False, object_store_memory=256 << 20,
         logging_level="ERROR", log_to_driver=False)
print(ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()  # until the test module closes our stdin
ray.shutdown()
"""
# The same runtime in both engines: `auto` picks one by timing, which may differ per process.
COMMON = ("--model", "rgb", "--runtime", "tensorflow", "--top-k", "2")


def ray_env(**extra: str) -> dict[str, str]:
    return {**cli_env(), **RAY_ENV, **extra}


def run_ray_cli(*args: str | Path, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "batch", *map(str, args)],
        cwd=cwd,
        env=ray_env(**env),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def ray_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The GCS address of a Ray instance started (and stopped) by this module."""
    log = tmp_path_factory.mktemp("ray-head") / "stderr.txt"
    with log.open("w") as stderr:
        head = subprocess.Popen(
            [sys.executable, "-c", _HEAD],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=ray_env(),
            text=True,
        )
    assert head.stdout is not None and head.stdin is not None
    address = head.stdout.readline().strip()
    try:
        assert address.startswith("127.0.0.1:"), log.read_text()
        yield address
    finally:
        head.stdin.close()
        try:
            head.wait(timeout=120)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()
        head.stdout.close()


@pytest.fixture(scope="module")
def local_run(
    model_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path, subprocess.CompletedProcess[str]]:
    """A labelled folder with corrupt files and a sub-folder, and its `--engine local` report."""
    root = tmp_path_factory.mktemp("ray-vs-local")
    folder = root / "images"
    write_rgb_folder(folder, per_class=6)
    rng = np.random.default_rng(3)
    (folder / "green" / "broken.png").write_bytes(encode(rgb_pixels("green", rng))[:60])
    (folder / "red" / "not_a_picture.jpg").write_text("hello")
    (folder / "red" / "empty.png").write_bytes(b"")
    (folder / "blue" / "deeper").mkdir()
    (folder / "blue" / "deeper" / "b.png").write_bytes(encode(rgb_pixels("blue", rng)))
    (folder / "notes.txt").write_text("not an image")
    out = root / "local.csv"
    result = run_cli(
        "run", folder, *COMMON, "--repository", model_repository, "--out", out, cwd=root
    )
    assert result.returncode == 0, result.stderr
    return folder, out, result


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _numbers(text: str) -> list[float]:
    return [float(part) for part in text.split(";") if part]


def assert_same_report(ray_csv: Path, local_csv: Path) -> None:
    """Same header, rows, order and text; scores and probabilities equal to 1e-6 (+ rounding)."""
    with ray_csv.open() as a, local_csv.open() as b:
        assert a.readline() == b.readline()  # the header: same columns in the same order
    ray_rows, local_rows = _rows(ray_csv), _rows(local_csv)
    assert [r["path"] for r in ray_rows] == [r["path"] for r in local_rows]
    for got, want in zip(ray_rows, local_rows, strict=True):
        numeric = {k for k in want if k.startswith("prob_")} | {"confidence", "top_k_scores"}
        assert {k: v for k, v in got.items() if k not in numeric} == {
            k: v for k, v in want.items() if k not in numeric
        }
        for key in numeric:
            # 6 printed decimals: two runs 1e-8 apart may round to neighbouring last digits.
            assert _numbers(got[key]) == pytest.approx(_numbers(want[key]), abs=1.01e-6), key


def test_ray_and_local_engines_write_the_same_report_and_summary(
    model_repository: Path,
    local_run: tuple[Path, Path, subprocess.CompletedProcess[str]],
    ray_address: str,
    tmp_path: Path,
) -> None:
    folder, local_csv, local_result = local_run
    out = tmp_path / "ray.csv"
    result = run_ray_cli(
        "run", folder, *COMMON, "--repository", model_repository, "--out", out,
        "--engine", "ray", "--address", ray_address, "--actors", "2", "--batch-size", "4",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert_same_report(out, local_csv)
    rows = _rows(out)
    errors = {r["path"]: r["error"] for r in rows if r["error"]}
    assert set(errors) == {"green/broken.png", "red/not_a_picture.jpg", "red/empty.png"}
    assert rows[[r["path"] for r in rows].index("blue/deeper/b.png") - 1]["path"].startswith(
        "blue/zz_"
    )  # a folder's files, then its sub-folders: the local order
    # The summary: accuracy, classification report and confusion matrix, as printed and as files.
    summary = json.loads((tmp_path / "ray.summary.json").read_text())
    local_summary = json.loads(local_csv.with_suffix(".summary.json").read_text())
    for key in ("accuracy", "per_class", "confusion_matrix", "report_text", "files", "errors"):
        assert summary[key] == local_summary[key], key
    assert (tmp_path / "ray.confusion.csv").read_text() == local_csv.with_suffix(
        ".confusion.csv"
    ).read_text()
    text = local_result.stdout.split("report:")[0]
    assert "confusion matrix" in text and text in result.stdout
    assert "3 errors" in result.stdout and "1 non-image files skipped" in result.stdout


def test_an_actor_killed_mid_run_is_replaced_and_every_file_reported_once(
    model_repository: Path,
    local_run: tuple[Path, Path, subprocess.CompletedProcess[str]],
    tmp_path: Path,
) -> None:
    """No --address: the CLI starts a Ray instance of its own; the first actor to classify a
    block SIGKILLs its own process before returning the rows (once: a marker file)."""
    folder, local_csv, _ = local_run
    marker = tmp_path / "killed"
    out = tmp_path / "ray.csv"
    result = run_ray_cli(
        "run", folder, *COMMON, "--repository", model_repository, "--out", out,
        "--engine", "ray", "--actors", "1", "--batch-size", "4",
        cwd=tmp_path, CLFBATCH_RAY_KILL_ONCE=str(marker),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert marker.exists()  # an actor did die holding a block
    paths = [r["path"] for r in _rows(out)]
    assert len(paths) == len(set(paths))
    assert_same_report(out, local_csv)


def test_engine_ray_without_ray_says_how_to_install_it(
    model_repository: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "images"
    write_rgb_folder(folder, per_class=1)
    no_ray = (
        "import sys; sys.modules['ray'] = None; from batch.cli import main; "
        "sys.argv[0] = 'clfbatch'; main()"
    )
    result = subprocess.run(
        [sys.executable, "-c", no_ray, "run", str(folder), "--model", "rgb",
         "--repository", str(model_repository), "--engine", "ray"],
        cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "pip install 'clfserve[ray]'" in result.stderr
    assert not list(tmp_path.glob("*.csv*"))


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("--server", "127.0.0.1:8500"), 2, "--engine ray loads the model from --repository"),
        (("--address", "no-port-here"), 3, "cannot start or reach Ray (no-port-here): "),
    ],
)
def test_engine_ray_with_a_server_or_an_unusable_address_fails_before_any_file(
    model_repository: Path, tmp_path: Path, args: tuple[str, str], code: int, message: str
) -> None:
    folder = tmp_path / "images"
    write_rgb_folder(folder, per_class=1)
    result = run_ray_cli(
        "run", folder, "--model", "rgb", "--repository", model_repository, "--engine", "ray",
        *args, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == code, result.stderr
    assert f"clfbatch: {message}" in result.stderr
    assert not list(tmp_path.glob("*.csv*"))


def test_a_model_no_actor_can_load_fails_the_run_with_exit_3(
    repository_copy: Path, ray_address: str, tmp_path: Path
) -> None:
    """This process resolves the version from its manifest; each actor then fails to load the
    SavedModel. Ray's error ends the run: exit 3, one line naming the loader's error, no
    report."""
    (repository_copy / "rgb" / "1" / "saved_model.pb").write_bytes(b"not a SavedModel")
    folder = tmp_path / "images"
    write_rgb_folder(folder, per_class=1)
    out = tmp_path / "ray.csv"
    result = run_ray_cli(
        "run", folder, *COMMON, "--repository", repository_copy, "--out", out,
        "--engine", "ray", "--address", ray_address, "--actors", "1", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.startswith("clfbatch: Ray")]
    assert line.startswith("clfbatch: Ray failed: ") and "Cannot parse file" in line, line
    assert "\x1b" not in line
    assert not out.exists()


ACTOR_DIED = (
    "The actor died because of an error raised in its creation task, "
    "\x1b[36mray::MapWorker(_Classify).__init__()\x1b[39m (pid=4242, ip=127.0.0.1)\n"
    '  File "/srv/batch/ray_engine.py", line 90, in __init__\n'
    "    self.backend = open_backend(model, version=version)\n"
    "OSError: Cannot parse file b'/srv/trained/rgb/1/saved_model.pb'\n"
)


@pytest.mark.parametrize(
    ("message", "line"),
    [
        (ACTOR_DIED, "OSError: Cannot parse file b'/srv/trained/rgb/1/saved_model.pb'"),
        ("\x1b[31mTask was cancelled\x1b[0m\n(more detail)", "Task was cancelled"),
        ("", "RuntimeError('')"),
    ],
)
def test_a_ray_failure_is_one_line_naming_what_was_raised(message: str, line: str) -> None:
    assert ray_failure(RuntimeError(message)) == line

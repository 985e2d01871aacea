"""Settings: defaults < CLFSERVE_* environment < CLI flags; the version policy."""

from __future__ import annotations

from pathlib import Path

import pytest

from serve.settings import Settings, VersionPolicy


def test_flags_override_environment_over_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLFSERVE_MAX_BATCH_SIZE", "7")
    monkeypatch.setenv("CLFSERVE_PORT", "9000")
    monkeypatch.setenv("CLFSERVE_LOG_FORMAT", "json")
    settings = Settings.from_args(
        ["--repository", "models", "--port", "0", "--version-policy", "latest:2", "--no-watch"]
    )
    assert settings.repository == Path("models")
    assert settings.port == 0
    assert settings.max_batch_size == 7
    assert settings.log_format == "json"
    assert settings.watch is False
    assert settings.policy == VersionPolicy("latest", count=2)
    assert Settings.from_args(["--metrics-port", "off"]).metrics_port is None
    assert Settings.from_args([]).max_message_bytes == 16 * 1024 * 1024


@pytest.mark.parametrize(
    "argv",
    [["--port", "70000"], ["--max-batch-size", "0"], ["--version-policy", "newest"],
     ["--log-format", "xml"]],
)  # fmt: skip
def test_bad_values_are_rejected(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:  # argparse's way: usage, one error line, exit 2
        Settings.from_args(argv)
    assert exited.value.code == 2
    assert f"clfserve: error: {argv[0]}: " in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "candidates", "chosen"),
    [
        ("latest", [1, 3, 2], [3]),
        ("latest:2", [1, 3, 2], [3, 2]),
        ("all", [2, 1], [2, 1]),
        ("specific:1,3", [1, 2, 3, 4], [3, 1]),
        ("specific:9", [1, 2], []),
    ],
)
def test_version_policy(text: str, candidates: list[int], chosen: list[int]) -> None:
    policy = VersionPolicy.parse(text)
    assert policy.select(candidates) == chosen
    assert VersionPolicy.parse(str(policy)) == policy


def test_latest_keeps_an_older_default_version_and_the_others_ignore_it() -> None:
    assert VersionPolicy.parse("latest").select([1, 3, 2], default=1) == [3, 1]
    assert VersionPolicy.parse("latest:2").select([1, 3, 2], default=2) == [3, 2]
    assert VersionPolicy.parse("latest").select([1, 3, 2], default=3) == [3]
    assert VersionPolicy.parse("specific:3").select([1, 3, 2], default=1) == [3]
    assert VersionPolicy.parse("all").select([1, 2], default=1) == [2, 1]


@pytest.mark.parametrize("text", ["latest:0", "specific:", "some", "all:3", "latest:x"])
def test_bad_version_policy(text: str) -> None:
    with pytest.raises(ValueError):
        VersionPolicy.parse(text)

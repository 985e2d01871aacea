"""What the deploy/ tests share: the files, the settings they must name, `clfserve --help`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from serve.settings import Settings
from tests.conftest import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
PORTS = {"port": 8500, "rest_port": 8501, "metrics_port": 8502}  # the documented defaults


def setting_variables() -> set[str]:
    """Every CLFSERVE_* variable clfserve reads: one per Settings field, plus those the serve
    package reads itself (runtime cache, LiteRT threads)."""
    fields = {"CLFSERVE_" + name.upper() for name in Settings.model_fields}
    text = "\n".join(path.read_text() for path in (REPO_ROOT / "serve").rglob("*.py"))
    return fields | set(re.findall(r"\bCLFSERVE_[A-Z_]+\b", text))


def unknown_variables(names: list[str]) -> list[str]:
    known = setting_variables()
    return [name for name in names if name.startswith("CLFSERVE_") and name not in known]


def settings_from(
    args: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """The Settings a container with these args and environment starts with."""
    for name in [n for n in os.environ if n.startswith("CLFSERVE_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings.from_args(args)


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.fixture(scope="session")
def help_text() -> str:
    """`clfserve --help`, from the console script installed beside this Python."""
    command = [str(Path(sys.executable).with_name("clfserve")), "--help"]
    return subprocess.run(command, capture_output=True, text=True, check=True, timeout=120).stdout


def flags(args: list[str]) -> list[str]:
    return [arg.split("=", 1)[0] for arg in args if arg.startswith("--")]

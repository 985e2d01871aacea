"""Settings declared once: every parameter of `clfbatch run` and `clfbatch watch` is a flag and a
`CLFBATCH_*` variable; the flag wins over the variable, the variable over the default."""

from __future__ import annotations

import csv
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import pytest
import typer
from typer.main import get_command
from typer.testing import CliRunner

from batch.cli import app
from batch.options import Arg, Opt, command
from batch.runner import RunSettings
from batch.watch.settings import WatchSettings
from tests.batch.conftest import run_cli


@dataclass(frozen=True)
class Hello:
    name: Annotated[str, Arg("Who.")]
    times: Annotated[int, Opt("How often.", min=1)] = 1
    loud: Annotated[bool, Opt("Shout.", ("--loud", "-l"))] = False


def _invoke(args: list[str], env: dict[str, str]) -> tuple[int, list[Hello], str]:
    seen: list[Hello] = []
    hello = typer.Typer()

    @hello.command()
    @command(Hello)
    def greet(settings: Hello) -> None:
        """Say hello."""
        seen.append(settings)

    result = CliRunner().invoke(hello, args, env=env)
    return result.exit_code, seen, result.output


def test_flag_over_variable_over_default() -> None:
    assert _invoke(["Ann"], {})[:2] == (0, [Hello("Ann")])
    env = {"CLFBATCH_TIMES": "3", "CLFBATCH_LOUD": "1"}
    assert _invoke(["Ann"], env)[:2] == (0, [Hello("Ann", 3, True)])
    assert _invoke(["Ann", "--times", "2"], env)[:2] == (0, [Hello("Ann", 2, True)])
    assert _invoke([], {"CLFBATCH_NAME": "Bo"})[:2] == (0, [Hello("Bo")])
    code, seen, output = _invoke(["Ann"], {"CLFBATCH_TIMES": "0"})
    assert code == 2 and not seen and "CLFBATCH_TIMES" in output


@pytest.mark.parametrize(("name", "settings"), [("run", RunSettings), ("watch", WatchSettings)])
def test_every_setting_is_a_parameter_with_its_variable(name: str, settings: type) -> None:
    click_command = get_command(app).commands[name]  # type: ignore[attr-defined]
    envvars = {param.name: param.envvar for param in click_command.params}
    fields = [field.name for field in dataclasses.fields(settings)]
    assert envvars == {field: f"CLFBATCH_{field.upper()}" for field in fields}


@pytest.mark.slow
def test_a_variable_reaches_a_real_run(
    model_repository: Path,
    rgb_folder: tuple[Path, dict[str, str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder, _ = rgb_folder
    monkeypatch.setenv("CLFBATCH_TOP_K", "2")  # run_cli passes the environment on
    result = run_cli("run", folder, "-m", "rgb", "--repository", model_repository, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    with (tmp_path / "images-rgb.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and all(len(row["top_k_labels"].split(";")) == 2 for row in rows)

"""docs/options.md maps every option of `clfserve --help` and `clfbatch <command> --help` to the
tests that cover it: an option missing from the table, or a table entry naming a test that does
not exist, fails here. (An option may be listed as `untested`: then it is at least visible.)"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import typer.main

from tests.conftest import REPO_ROOT

TABLE = REPO_ROOT / "docs" / "options.md"
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
TEST_REF = re.compile(r"(tests/[\w/]+\.py)::(\w+)")
NOT_OPTIONS = {"--help", "--install-completion", "--show-completion"}


def table() -> dict[str, dict[str, str]]:
    """{command: {flag: the row's test cell}} from the markdown tables of docs/options.md."""
    rows: dict[str, dict[str, str]] = {}
    for line in TABLE.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].strip("`").startswith("clf"):
            continue
        command, flags, tests = cells
        for flag in FLAG.findall(flags):
            rows.setdefault(command.strip("`"), {})[flag] = tests
    return rows


def clfserve_options() -> set[str]:
    result = subprocess.run(
        [sys.executable, "-m", "serve", "--help"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return set(FLAG.findall(result.stdout)) - NOT_OPTIONS


def clfbatch_options() -> dict[str, set[str]]:
    """Each clfbatch command's options as its --help shows them (hidden ones excluded)."""
    # The module of the `clfbatch` console script, and the typer app in it.
    (entry,) = entry_points(group="console_scripts", name="clfbatch")
    module = importlib.import_module(entry.module)
    (app,) = {id(v): v for v in vars(module).values() if isinstance(v, typer.Typer)}.values()
    group = typer.main.get_command(app)
    commands = getattr(group, "commands", {})
    assert commands, "clfbatch has no commands"
    return {
        f"clfbatch {name}": {
            flag
            for param in command.params
            if not getattr(param, "hidden", False)
            for flag in param.opts
            if flag.startswith("--")
        }
        - NOT_OPTIONS
        for name, command in commands.items()
    }


def test_every_clfserve_option_is_in_the_table() -> None:
    documented = set(table().get("clfserve", {}))
    missing = sorted(clfserve_options() - documented)
    assert not missing, f"add these clfserve options to {TABLE.name}: {missing}"


def test_every_clfbatch_option_is_in_the_table() -> None:
    rows = table()
    missing = {
        command: sorted(flags - set(rows.get(command, {})))
        for command, flags in clfbatch_options().items()
    }
    missing = {command: flags for command, flags in missing.items() if flags}
    assert not missing, f"add these clfbatch options to {TABLE.name}: {missing}"


def test_every_test_the_table_names_exists() -> None:
    named = {
        (path, name)
        for commands in table().values()
        for cell in commands.values()
        for path, name in TEST_REF.findall(cell)
    }
    assert named, "the table names no tests"
    absent = [
        f"{path}::{name}"
        for path, name in sorted(named)
        if not (REPO_ROOT / path).is_file()
        or not re.search(rf"^def {name}\(", (REPO_ROOT / path).read_text(), re.MULTILINE)
    ]
    assert not absent, f"{TABLE.name} names tests that do not exist: {absent}"


@pytest.mark.parametrize("cell", ["", "tbd", "see above"])
def test_a_row_without_a_test_or_untested_is_refused(cell: str) -> None:
    assert not is_accounted(cell)


def is_accounted(cell: str) -> bool:
    return bool(TEST_REF.search(cell)) or cell.strip().lower().startswith("untested")


def test_every_row_names_a_test_or_says_untested() -> None:
    bad = [
        f"{command} {flag}: {cell!r}"
        for command, flags in table().items()
        for flag, cell in flags.items()
        if not is_accounted(cell)
    ]
    assert not bad, bad


def untested() -> list[str]:
    return [
        f"{command} {flag}"
        for command, flags in table().items()
        for flag, cell in flags.items()
        if cell.strip().lower().startswith("untested")
    ]


def test_table_parser_reads_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (
        "| command | option | tests |\n|---|---|---|\n"
        "| `clfserve` | `--port`, `--port-file` | tests/serve/test_x.py::test_y |\n"
        "| `clfbatch run` | `--force/--no-force` | untested |\n"
    )
    (tmp_path / "options.md").write_text(text)
    monkeypatch.setattr(sys.modules[__name__], "TABLE", tmp_path / "options.md")
    assert table() == {
        "clfserve": {
            "--port": "tests/serve/test_x.py::test_y",
            "--port-file": "tests/serve/test_x.py::test_y",
        },
        "clfbatch run": {"--force": "untested", "--no-force": "untested"},
    }
    assert untested() == ["clfbatch run --force", "clfbatch run --no-force"]

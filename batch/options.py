"""Typed settings as typer commands: each dataclass field is one CLI parameter and one
`CLFBATCH_<FIELD>` environment variable, declared once.

    @dataclass(frozen=True)
    class Hello:
        name: Annotated[str, Arg("Who to greet.")]
        times: Annotated[int, Opt("How often.", min=1)] = 1

    @app.command()
    @command(Hello)
    def hello(settings: Hello) -> None: ...

`clfbatch hello Ann --times 2` and `CLFBATCH_TIMES=2 clfbatch hello Ann` fill the same field;
the flag wins over the variable, the variable over the default.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import typer

ENV_PREFIX = "CLFBATCH_"
S = TypeVar("S")


@dataclass(frozen=True)
class Arg:
    """A positional parameter."""

    help: str


@dataclass(frozen=True)
class Opt:
    """An option; `names` replace the default `--field-name`; `min`/`max` bound numbers."""

    help: str
    names: tuple[str, ...] = ()
    min: float | None = None
    max: float | None = None


def _parameter(field: dataclasses.Field[Any], hint: Any) -> inspect.Parameter:
    kind, spec = typing.get_args(hint)[:2]
    env = ENV_PREFIX + field.name.upper()
    info: Any
    if isinstance(spec, Arg):
        info = typer.Argument(help=spec.help, envvar=env)
    else:
        info = typer.Option(*spec.names, help=spec.help, envvar=env, min=spec.min, max=spec.max)
    empty = inspect.Parameter.empty
    return inspect.Parameter(
        field.name,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        default=empty if field.default is dataclasses.MISSING else field.default,
        annotation=Annotated[kind, info],
    )


def command(settings: type[S]) -> Callable[[Callable[[S], None]], Callable[..., None]]:
    """Turn `f(settings)` into a typer command whose parameters are the settings' fields."""
    hints = typing.get_type_hints(settings, include_extras=True)
    fields = dataclasses.fields(settings)  # type: ignore[arg-type]
    parameters = [_parameter(field, hints[field.name]) for field in fields]
    # required first (fields shared through a base class come before the subclass's own)
    parameters.sort(key=lambda p: p.default is not inspect.Parameter.empty)

    def wrap(function: Callable[[S], None]) -> Callable[..., None]:
        def from_options(**values: Any) -> None:
            function(settings(**values))

        from_options.__name__ = function.__name__
        from_options.__doc__ = function.__doc__
        from_options.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        from_options.__annotations__ = {p.name: p.annotation for p in parameters}
        return from_options

    return wrap

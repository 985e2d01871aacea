"""The backend a `clfbatch` command's settings name, opened by one call for `run` and `watch`.

backend = open_chosen(settings)               # settings: RunSettings or WatchSettings
newer = open_chosen(settings, unpinned=True)  # the default (or labelled) one, not --version
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from batch.backends import Backend, Runtime, ServerAccess, open_backend


class BackendChoice(Protocol):
    """The settings fields that say which model version and where it runs (or which server)."""

    @property
    def model(self) -> str: ...
    @property
    def version(self) -> int | None: ...
    @property
    def version_label(self) -> str | None: ...
    @property
    def repository(self) -> Path: ...
    @property
    def server(self) -> str | None: ...
    @property
    def runtime(self) -> Runtime: ...
    @property
    def access(self) -> ServerAccess: ...


def open_chosen(choice: BackendChoice, *, unpinned: bool = False) -> Backend:
    """`open_backend` with the settings' model, version (or label), repository, server, runtime
    and access; `unpinned`: the default version (or the label's) instead of a pinned one."""
    return open_backend(
        choice.model,
        version=None if unpinned else choice.version,
        label=choice.version_label,
        repository=choice.repository,
        server=choice.server,
        runtime=choice.runtime,
        access=choice.access,
    )

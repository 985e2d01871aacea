"""The watch daemon follows its model: between batches, a new default version in the repository
(or the server's new default) replaces the one in use, if it has the same classes.

    fresh = newer_backend(settings, worker.backend)   # None: keep the current one
"""

from __future__ import annotations

import logging

from batch.backend_choice import open_chosen
from batch.backends import Backend
from batch.watch.settings import WatchSettings
from serve.errors import InvalidInput, ManifestError, ModelNotFound, VersionNotFound
from serve.repository import resolve

log = logging.getLogger("clfbatch.watch")


def newer_backend(settings: WatchSettings, current: Backend) -> Backend | None:
    """The new default version (or the label's new version), opened; None when it has not changed,
    the settings pin a version, it cannot be opened, or its classes differ (each but the first two
    logged as a warning)."""
    s = settings
    if s.version is not None:
        return None
    try:
        chosen = None if s.server else resolve(s.repository, s.model, label=s.version_label)
        if chosen is not None and chosen.version == current.version:
            return None
        fresh = open_chosen(s, unpinned=True)
    except (ManifestError, ModelNotFound, VersionNotFound, InvalidInput, OSError) as exc:
        log.warning("cannot look for a new model version: %s", exc)
        return None
    except Exception as exc:  # a broken SavedModel, a server that went away
        log.warning("cannot load the new model version: %s", exc)
        return None
    if fresh.version == current.version or fresh.labels != current.labels:
        if fresh.labels != current.labels:
            log.warning(
                "version %d has other classes; keeping version %d", fresh.version, current.version
            )
        fresh.close()
        return None
    return fresh

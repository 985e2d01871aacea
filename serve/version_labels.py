"""Version labels: names that pick a version of a model, for the server and for `clfbatch`.

Two kinds, resolved by the one function `pick`:

- the server's own: `latest` (the newest available version), `previous` (the one before it) and
  `stable` (the default version, below), as in TensorFlow Serving's `version_label`;
- a manifest's `"labels": ["fast"]`: the label names the newest version whose manifest carries it,
  so shipping a new `fast` version moves the label without touching the older one.

The default version (what a request naming no version or label gets, and `stable`) is the newest
version whose manifest carries `default`, else the newest: shipping a faster, less accurate
version then does not change what unpinned clients get.

    pick("fast", [(4, ("accurate",)), (3, ()), (1, ("fast",))])  # -> 1
    pick(None, [(4, ("fast",)), (3, ("default",))])              # -> 3
"""

from __future__ import annotations

import re
from collections.abc import Sequence

LATEST = "latest"
STABLE = "stable"  # the default version
PREVIOUS = "previous"
RESERVED = (STABLE, LATEST, PREVIOUS)
DEFAULT = "default"  # a manifest label: this version is the default one
_NAME = re.compile(r"[a-z][a-z0-9_.-]{0,63}")


def check_label(label: str) -> str:
    """`label` if a manifest may carry it, else ValueError saying why."""
    if not isinstance(label, str) or not _NAME.fullmatch(label):
        raise ValueError(
            f"version label {label!r} must be lowercase letters, digits, '_', '.' or '-', "
            "starting with a letter (at most 64 characters)"
        )
    if label in RESERVED:
        raise ValueError(f"version label {label!r} is the server's own; pick another name")
    return label


def pick(label: str | None, versions: Sequence[tuple[int, Sequence[str]]]) -> int | None:
    """The version `label` names among `versions` ((number, manifest labels), any order), or None;
    `label` None: the default version.

    `versions` are the candidates (the available ones on a server, the complete ones on disk).
    """
    newest_first = sorted(versions, key=lambda item: item[0], reverse=True)
    if not label or label == STABLE:
        marked = next((number for number, labels in newest_first if DEFAULT in labels), None)
        return marked if marked is not None else pick(LATEST, versions)
    if label == LATEST:
        return newest_first[0][0] if newest_first else None
    if label == PREVIOUS:
        return newest_first[1][0] if len(newest_first) > 1 else None
    return next((number for number, labels in newest_first if label in labels), None)


def assigned(versions: Sequence[tuple[int, Sequence[str]]]) -> dict[int, list[str]]:
    """Which labels point at which version right now: each label on the one version it names."""
    carried = sorted({label for _, labels in versions for label in labels})
    names = [STABLE, LATEST, PREVIOUS, *carried]
    result: dict[int, list[str]] = {}
    for label in names:
        number = pick(label, versions)
        if number is not None:
            result.setdefault(number, []).append(label)
    return result

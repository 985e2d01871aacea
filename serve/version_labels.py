"""Version labels: names that pick a version of a model, for the server and for `clfbatch`.

Two kinds, resolved by the one function `pick`:

- the server's own: `stable` / `latest` (the newest available version) and `previous` (the one
  before it), as in TensorFlow Serving's `version_label`;
- a manifest's `"labels": ["fast"]`: the label names the newest version whose manifest carries it,
  so shipping a new `fast` version moves the label without touching the older one.

    pick("fast", [(4, ("accurate",)), (3, ()), (1, ("fast",))])  # -> 1
"""

from __future__ import annotations

import re
from collections.abc import Sequence

NEWEST = ("stable", "latest")
PREVIOUS = "previous"
RESERVED = (*NEWEST, PREVIOUS)
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


def pick(label: str, versions: Sequence[tuple[int, Sequence[str]]]) -> int | None:
    """The version `label` names among `versions` ((number, manifest labels), any order), or None.

    `versions` are the candidates (the available ones on a server, the complete ones on disk).
    """
    newest_first = sorted(versions, key=lambda item: item[0], reverse=True)
    if label in NEWEST:
        return newest_first[0][0] if newest_first else None
    if label == PREVIOUS:
        return newest_first[1][0] if len(newest_first) > 1 else None
    return next((number for number, labels in newest_first if label in labels), None)


def assigned(versions: Sequence[tuple[int, Sequence[str]]]) -> dict[int, list[str]]:
    """Which labels point at which version right now: each label on the one version it names."""
    names = [*NEWEST, PREVIOUS, *sorted({label for _, labels in versions for label in labels})]
    result: dict[int, list[str]] = {}
    for label in names:
        number = pick(label, versions)
        if number is not None:
            result.setdefault(number, []).append(label)
    return result

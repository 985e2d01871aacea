"""True labels of input files: from a `path,label` CSV file or from class-named folders.

mapping = read_labels_file(Path("truth.csv"))          # {"x/1.png": "cat", ...}
truth = label_source("auto", ("cat", "dog"), warn=print)
truth("cat/1.png")                                      # "cat"
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

from batch.errors import BatchError

_LABEL_COLUMNS = ("label", "true_label", "class", "y_true")


def read_labels_file(path: Path) -> dict[str, str]:
    """`path,label` rows (header optional; paths relative to the folder) -> {path: label}."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            records = [r for r in csv.reader(handle) if r and any(c.strip() for c in r)]
    except OSError as exc:
        raise BatchError(f"cannot read labels file {path}: {exc.strerror or exc}") from exc
    path_col, label_col = 0, 1
    if records:
        header = [c.strip().lower() for c in records[0]]
        if "path" in header or any(name in header for name in _LABEL_COLUMNS):
            path_col = header.index("path") if "path" in header else 0
            label_col = next((header.index(n) for n in _LABEL_COLUMNS if n in header), 1)
            records = records[1:]
    labels = {}
    for number, record in enumerate(records, start=1):
        if len(record) <= max(path_col, label_col):
            raise BatchError(f"{path}: row {number} needs a path and a label: {record}")
        labels[Path(record[path_col].strip()).as_posix()] = record[label_col].strip()
    return labels


def label_source(
    spec: str, classes: tuple[str, ...], warn: Callable[[str], None]
) -> Callable[[str], str | None]:
    """relative path -> true label, for `--labels auto|none|FILE.csv`."""
    if spec == "none":
        return lambda relative: None
    if spec == "auto":
        known = set(classes)

        def from_folder(relative: str) -> str | None:
            parts = relative.split("/")
            return parts[-2] if len(parts) > 1 and parts[-2] in known else None

        return from_folder
    mapping = read_labels_file(Path(spec))
    unknown = sorted(set(mapping.values()) - set(classes))
    if unknown:
        warn(
            f"warning: {spec} names classes the model does not have: {', '.join(unknown)} "
            f"(model classes: {', '.join(classes)}); those files are left out of the metrics"
        )
    return lambda relative: mapping.get(relative)

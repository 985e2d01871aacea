"""`clfbatch models`: the repository's models and versions as a table."""

from __future__ import annotations

from pathlib import Path

from serve.repository import scan


def _classes(classes: tuple[str, ...], width: int = 48) -> str:
    text = ", ".join(classes)
    return text if len(text) <= width else text[: width - 1] + "…"


def models_table(repository: Path) -> str | None:
    """One line per complete version (model, version, input, classes, accuracy), or None."""
    found = scan(repository)
    if not found:
        return None
    rows = [("model", "version", "input", "classes", "test accuracy", "architecture")]
    for name, versions in found.items():
        for version in versions:
            manifest = version.manifest
            accuracy = manifest.test_accuracy
            rows.append(
                (
                    name,
                    str(version.version),
                    "x".join(str(n) for n in manifest.input_shape),
                    f"{len(manifest.classes)}: {_classes(manifest.classes)}",
                    f"{accuracy:.4f}" if accuracy is not None else "-",
                    manifest.architecture,
                )
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    return "\n".join(lines) + "\n"

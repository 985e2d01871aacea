"""Matplotlib pictures: training curves and the confusion matrix, written as PNG files."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display is ever needed
import matplotlib.pyplot as plt
import numpy as np


def plot_curves(history: Mapping[str, Sequence[float]], path: Path) -> None:
    """Loss and accuracy, train vs validation, side by side (as the tutorials plotted them)."""
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for key, style in ((metric, "-"), (f"val_{metric}", "--")):
            if key in history:  # pragma: no branch - training always holds out a validation split
                epochs = np.arange(1, len(history[key]) + 1)
                axis.plot(epochs, history[key], style, label=key)
        axis.set_xlabel("epoch")
        axis.set_ylabel(metric)
        axis.set_title(metric)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def plot_confusion(
    labels: Sequence[str], confusion: np.ndarray, path: Path, title: str = ""
) -> None:
    """A labelled confusion matrix with the count in every cell."""
    size = max(4.0, 0.6 * len(labels) + 2)
    figure, axis = plt.subplots(figsize=(size, size))
    axis.imshow(confusion, cmap="Blues")
    axis.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axis.set_yticks(range(len(labels)), labels)
    axis.set_xlabel("predicted label")
    axis.set_ylabel("true label")
    axis.set_title(title or "confusion matrix")
    threshold = confusion.max(initial=0) / 2
    for (row, col), count in np.ndenumerate(confusion):
        color = "white" if count > threshold else "black"
        axis.text(col, row, str(int(count)), ha="center", va="center", color=color)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)

"""The prediction gallery of a report: which images to show, their thumbnails, the PNG pages.

The gallery shows the mistakes first (most confident first: a confident mistake is often a
mislabelled image), then the least confident of the other classified rows; for a report without
true labels that is simply the least confident predictions. The probabilities come from the
report itself (`prob_<class>` columns / `probabilities`): no model is needed to draw it.

    paths = write_gallery(Path("images-cifar10.csv"), Path("images"), size=48, warn=print)
    # images-cifar10.gallery.png (or .gallery-1.png, -2.png ...) and images-cifar10.gallery.html
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from batch.fsutil import atomic_write
from batch.report import ReportRow, read_report, report_labels
from batch.summary import summary_prefix

PER_ROW = 4  # items (thumbnail + bars) per row of a PNG page
ROWS_PER_PAGE = 6
THUMBNAIL_PX = 128  # the longest side kept; small images are shown enlarged, never resampled
MAX_BARS = 12  # more classes than this: the top 10 and the true class only
PREDICTED, TRUE, BOTH = "tab:orange", "tab:blue", "tab:green"
_NAMED_MISSING = 10


@dataclass(frozen=True)
class GalleryItem:
    """One picture of the gallery: its report row, probabilities in class order, thumbnail."""

    row: ReportRow
    probabilities: tuple[float, ...]
    image: np.ndarray | None  # RGB uint8; None when the file is missing or unreadable

    @property
    def wrong(self) -> bool:
        return self.row.correct is False


def select(rows: Iterable[ReportRow], size: int) -> list[ReportRow]:
    """The mistakes (most confident first), then the least confident other classified rows.

    Ties keep report order. Streams: memory is bounded by `size`, not by the report.
    """
    wrong: list[tuple[float, int, ReportRow]] = []  # min-heap on confidence: drops the least
    rest: list[tuple[float, int, ReportRow]] = []  # min-heap on -confidence: drops the most
    for index, row in enumerate(rows):
        if row.predicted is None or row.confidence is None:
            continue  # an error row: nothing was predicted
        if row.correct is False:
            entry = (row.confidence, -index, row)
            heap = wrong
        else:
            entry = (-row.confidence, -index, row)
            heap = rest
        if len(heap) < size:
            heapq.heappush(heap, entry)
        else:
            heapq.heappushpop(heap, entry)
    first = [row for _, _, row in sorted(wrong, key=lambda e: (-e[0], -e[1]))]
    then = [row for _, _, row in sorted(rest, key=lambda e: (-e[0], -e[1]))]
    return (first + then)[:size]


def probabilities(row: ReportRow, labels: Sequence[str]) -> tuple[float, ...]:
    """The row's full probability vector; from its top-k scores (others 0) if none in the report."""
    if len(row.probabilities) == len(labels):
        return row.probabilities
    scores = dict(row.top_k)
    return tuple(scores.get(label, 0.0) for label in labels)


def thumbnail(path: Path, px: int = THUMBNAIL_PX) -> np.ndarray | None:
    """The image at `path` as RGB pixels, its longest side at most `px`; None if unreadable."""
    try:
        with Image.open(path) as image:
            image.thumbnail((px, px))
            return np.asarray(image.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError):
        return None


def images_root(report: Path, model: str) -> Path:
    """Where a report's paths are relative to, by `clfbatch run`'s default naming.

    `dir/<folder>-<model>.csv` -> `dir/<folder>` when that folder exists, else `dir`.
    """
    stem = summary_prefix(report).name
    if model and stem.endswith(f"-{model}"):
        candidate = report.parent / stem[: -len(model) - 1]
        if candidate.is_dir():
            return candidate
    return report.parent


def missing_line(missing: Sequence[str], shown: int, root: Path) -> str:
    """One line naming the files the gallery could not show (the first ten, then a count)."""
    names = ", ".join(missing[:_NAMED_MISSING])
    more = f" and {len(missing) - _NAMED_MISSING} more" if len(missing) > _NAMED_MISSING else ""
    return (
        f"warning: gallery: {len(missing)} of its {shown} images missing or unreadable "
        f"under {root}: {names}{more} (drawn without their picture; --images sets the folder)"
    )


def shown_classes(labels: Sequence[str], item: GalleryItem) -> list[int]:
    """Which classes get a bar: all of them, or the most probable ones and the true class."""
    if len(labels) <= MAX_BARS:
        return list(range(len(labels)))
    top = sorted(range(len(labels)), key=lambda i: -item.probabilities[i])[: MAX_BARS - 2]
    true = item.row.true_label
    if true in labels and labels.index(true) not in top:
        top.append(labels.index(true))
    return top


def bar_colour(label: str, row: ReportRow) -> str | None:
    """The colour marking a class's bar: predicted, true, or both; None for the others."""
    if label == row.predicted:
        return BOTH if label == row.true_label else PREDICTED
    return TRUE if label == row.true_label else None


def title(row: ReportRow) -> str:
    """`predicted / true  93%` (`?` for an unknown true label)."""
    return f"{row.predicted} / {row.true_label or '?'}  {row.confidence or 0.0:.0%}"


def _draw_page(
    items: Sequence[GalleryItem], labels: Sequence[str], path: Path, *, head: str
) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display is ever needed
    import matplotlib.pyplot as plt

    columns = min(PER_ROW, len(items))
    rows = math.ceil(len(items) / columns)
    height = 2.3 * rows + 0.8  # inches; the top 0.8 for the page title and the first row's
    figure = plt.figure(figsize=(4.4 * columns, height))
    grid = figure.add_gridspec(
        rows,
        columns,
        left=0.06,
        right=0.98,
        bottom=0.35 / height,
        top=1 - 0.8 / height,
        wspace=0.2,
        hspace=0.45,
    )
    for index, item in enumerate(items):
        cell = grid[index // columns, index % columns].subgridspec(
            1, 2, width_ratios=(1, 1.25), wspace=0.55
        )
        picture, bars = figure.add_subplot(cell[0]), figure.add_subplot(cell[1])
        if item.image is not None:
            small = max(item.image.shape[:2]) < 64
            picture.imshow(item.image, interpolation="nearest" if small else "antialiased")
        else:
            picture.text(0.5, 0.5, "file\nmissing", ha="center", va="center", color="grey")
        picture.set_xticks([])
        picture.set_yticks([])
        row = item.row
        colour = "black" if row.correct is None else ("tab:red" if item.wrong else "tab:green")
        # Above the whole item: over the thumbnail alone it would run into the bars' class names.
        top = cell[1].get_position(figure).y1
        left = cell[0].get_position(figure).x0
        figure.text(left, top + 0.012 / rows, title(row), fontsize=9, color=colour)
        picture.set_xlabel(_short(row.path), fontsize=6, color="grey")
        shown = shown_classes(labels, item)
        names = [labels[i] for i in shown]
        colours = [bar_colour(name, row) or "lightgrey" for name in names]
        bars.barh(range(len(shown)), [item.probabilities[i] for i in shown], color=colours)
        bars.set_yticks(range(len(shown)), names, fontsize=7)
        bars.invert_yaxis()
        bars.set_xlim(0, 1)
        bars.tick_params(axis="x", labelsize=6)
    figure.suptitle(head, fontsize=10, y=1 - 0.15 / height)
    figure.savefig(path, dpi=80)
    plt.close(figure)


def _short(path: str, keep: int = 34) -> str:
    return path if len(path) <= keep else "…" + path[-keep + 1 :]


def gallery_paths(prefix: Path, pages: int) -> list[Path]:
    """`<prefix>.gallery.png` for one page, `<prefix>.gallery-1.png` ... for several."""
    if pages == 1:
        return [prefix.with_name(f"{prefix.name}.gallery.png")]
    return [prefix.with_name(f"{prefix.name}.gallery-{n}.png") for n in range(1, pages + 1)]


def write_pages(items: Sequence[GalleryItem], labels: Sequence[str], prefix: Path) -> list[Path]:
    """Draw the PNG page(s); stale pages of an earlier gallery with this prefix are removed."""
    per_page = PER_ROW * ROWS_PER_PAGE
    pages = max(1, math.ceil(len(items) / per_page))
    paths = gallery_paths(prefix, pages)
    for stale in [*gallery_paths(prefix, 1), *prefix.parent.glob(f"{prefix.name}.gallery-*.png")]:
        if stale not in paths:
            stale.unlink(missing_ok=True)
    legend = f"bars: {BOTH[4:]} = predicted = true, {PREDICTED[4:]} = predicted, {TRUE[4:]} = true"
    for number, path in enumerate(paths):
        chunk = items[number * per_page : (number + 1) * per_page]
        head = f"{prefix.name}: page {number + 1} of {pages}; {legend}"
        atomic_write(path, partial(_draw_page, chunk, labels, head=head))
    return paths


def write_gallery(
    report: Path, images: Path | None, size: int, warn: Callable[[str], None]
) -> list[Path]:
    """Write the gallery of `report` (PNG page(s), then the HTML); returns the files written.

    `images` is the folder the report's paths are relative to (default: `images_root`).
    Files that are gone are named in one `warn` line; the others are drawn.
    """
    from batch.gallery_html import write_html

    labels = report_labels(report)
    rows = select(read_report(report), size)
    if not rows:
        warn(f"warning: gallery: {report} has no classified row; no gallery written")
        return []
    root = images if images is not None else images_root(report, rows[0].model)
    items = [GalleryItem(r, probabilities(r, labels), thumbnail(root / r.path)) for r in rows]
    missing = [item.row.path for item in items if item.image is None]
    if missing:
        warn(missing_line(missing, len(items), root))
    prefix = summary_prefix(report)
    pages = write_pages(items, labels, prefix)
    html = prefix.with_name(f"{prefix.name}.gallery.html")
    atomic_write(html, lambda p: write_html(items, labels, p, report.name, missing))
    return [*pages, html]

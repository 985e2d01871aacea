"""`clfbatch run --gallery` and `clfbatch report --gallery` as real subprocesses: the files, and
which images the gallery shows, computed here from the report independently of batch.gallery."""

from __future__ import annotations

import base64
import csv
import io
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from batch.report import ReportRow, ReportWriter
from tests.batch.conftest import run_cli, write_rgb_folder
from tests.images import RGB_CLASSES, encode, rgb_pixels


class Cards(HTMLParser):
    """The gallery cards of an HTML page, in document order: their data-* and picture."""

    def __init__(self) -> None:
        super().__init__()
        self.cards: list[dict[str, str]] = []
        self.sources: list[str] = []  # every src= and href= in the page

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {key: value or "" for key, value in attrs}
        self.sources += [attributes[k] for k in ("src", "href") if k in attributes]
        classes = attributes.get("class", "").split()
        if tag == "div" and "card" in classes:
            self.cards.append({k[5:]: v for k, v in attributes.items() if k.startswith("data-")})
        elif self.cards and tag == "img":
            self.cards[-1]["src"] = attributes["src"]
        elif self.cards and tag == "div" and "missing" in classes:
            self.cards[-1]["src"] = "missing"


def parse(path: Path) -> Cards:
    parser = Cards()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def report_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def expected_gallery(rows: list[dict[str, str]], size: int) -> list[str]:
    """Wrong rows (true != predicted), most confident first, then the rest, least confident
    first; the first `size` paths."""
    classified = [r for r in rows if r["predicted"]]
    wrong = [r for r in classified if r["true_label"] and r["true_label"] != r["predicted"]]
    rest = [r for r in classified if r not in wrong]
    wrong.sort(key=lambda r: -float(r["confidence"]))
    rest.sort(key=lambda r: float(r["confidence"]))
    return [r["path"] for r in wrong + rest][:size]


def decoded(uri: str) -> np.ndarray:
    prefix = "data:image/png;base64,"
    assert uri.startswith(prefix), uri[:40]
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri[len(prefix) :]))).convert("RGB"))


def assert_drawn(png: Path) -> None:
    with Image.open(png) as image:
        pixels = np.asarray(image.convert("L"))
    assert image.format == "PNG" and min(pixels.shape) > 200
    assert pixels.std() > 10  # not a blank page


@pytest.mark.slow  # starts Python + TensorFlow
def test_run_gallery_shows_the_mistakes_then_the_least_confident_correct(
    model_repository: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "images"
    write_rgb_folder(folder, per_class=10)  # 32 images: more than one 24-image PNG page
    result = run_cli(
        "run", folder, "--model", "rgb", "--repository", model_repository,
        "--gallery", "--gallery-size", "30", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = tmp_path / "images-rgb.csv"
    rows = report_rows(report)
    expected = expected_gallery(rows, 30)  # of 32: the two most confident correct are left out
    wrong = [r["path"] for r in rows if r["true_label"] != r["predicted"]]
    assert wrong and len(rows) == 32 and len(expected) == 30
    pages = [tmp_path / f"images-rgb.gallery-{n}.png" for n in (1, 2)]
    html = tmp_path / "images-rgb.gallery.html"
    for path in (*pages, html):
        assert f"gallery: {path}" in result.stdout
    for path in pages:
        assert_drawn(path)
    assert not (tmp_path / "images-rgb.gallery.png").exists()
    page = parse(html)
    cards = page.cards
    assert [card["path"] for card in cards] == expected
    assert {card["path"] for card in cards[: len(wrong)]} == set(wrong)
    flags = ["true"] * len(wrong) + ["false"] * (30 - len(wrong))
    assert [card["wrong"] for card in cards] == flags
    by_path = {r["path"]: r for r in rows}
    for card in cards:
        row = by_path[card["path"]]
        assert (card["predicted"], card["true"]) == (row["predicted"], row["true_label"])
        original = np.asarray(Image.open(folder / row["path"]).convert("RGB"))
        assert np.array_equal(decoded(card["src"]), original)  # the file's own pixels
    assert all(source.startswith("data:") for source in page.sources)
    assert not re.search(r"https?://", html.read_text())
    # Sort and filter by class happen in the page itself.
    assert '<select id="cls">' in html.read_text() and "<script>" in html.read_text()


def write_report(path: Path, rows: list[tuple[str, list[float], str]]) -> None:
    """A report as `clfbatch run` writes it: (path, probabilities, true label) per row."""
    header = ["path", "predicted", "confidence", "top_k_labels", "top_k_scores"]
    header += [f"prob_{c}" for c in RGB_CLASSES] + ["model", "version", "true_label", "correct"]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*header, "error"])
        for name, probs, true in rows:
            best = RGB_CLASSES[int(np.argmax(probs))]
            correct = "" if not true else str(best == true).lower()
            scores = [f"{p:.6f}" for p in probs]
            writer.writerow(
                [name, best, f"{max(probs):.6f}", best, scores[int(np.argmax(probs))], *scores,
                 "rgb", "1", true, correct, ""]
            )  # fmt: skip


# (file, probabilities blue/green/red, true label): wrong at 0.9 and 0.6, the rest right.
ROWS = [
    ("blue/a.png", [0.95, 0.03, 0.02], "blue"),
    ("blue/b.png", [0.05, 0.05, 0.90], "blue"),  # wrong, confident
    ("green/c.png", [0.30, 0.40, 0.30], "green"),  # right, least confident
    ("green/d.png", [0.60, 0.35, 0.05], "green"),  # wrong
    ("red/e.png", [0.10, 0.35, 0.55], "red"),
    ("red/f.png", [0.01, 0.01, 0.98], "red"),
]


def write_images(folder: Path, names: list[str]) -> None:
    rng = np.random.default_rng(3)
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(encode(rgb_pixels(name.split("/")[0], rng)))


def test_report_gallery_of_an_existing_report(tmp_path: Path) -> None:
    write_images(tmp_path / "images", [name for name, _, _ in ROWS])
    report = tmp_path / "images-rgb.csv"
    write_report(report, ROWS)
    for stale in ("images-rgb.gallery-1.png", "images-rgb.gallery-2.png"):
        (tmp_path / stale).write_bytes(b"an earlier, longer gallery")
    # The folder is found by the report's default name (<folder>-<model>.csv).
    result = run_cli("report", report, "--gallery", "--gallery-size", "4", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "missing" not in result.stderr
    html = tmp_path / "images-rgb.gallery.html"
    cards = parse(html).cards
    assert [c["path"] for c in cards] == ["blue/b.png", "green/d.png", "green/c.png", "red/e.png"]
    assert [c["path"] for c in cards] == expected_gallery(report_rows(report), 4)
    assert all(c["src"].startswith("data:image/png") for c in cards)
    assert_drawn(tmp_path / "images-rgb.gallery.png")
    assert not list(tmp_path.glob("images-rgb.gallery-*.png"))  # the stale pages are gone
    assert "accuracy: 0.6667" in result.stdout  # the metrics are still recomputed


def test_report_gallery_without_labels_shows_the_least_confident(tmp_path: Path) -> None:
    write_images(tmp_path / "pics", [name for name, _, _ in ROWS])
    report = tmp_path / "unlabelled.csv"
    write_report(report, [(name, probs, "") for name, probs, _ in ROWS])
    result = run_cli(
        "report", report, "--gallery", "--gallery-size", "3", "--images", tmp_path / "pics",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    cards = parse(tmp_path / "unlabelled.gallery.html").cards
    assert [c["path"] for c in cards] == ["green/c.png", "red/e.png", "green/d.png"]
    assert {c["wrong"] for c in cards} == {"false"} and {c["true"] for c in cards} == {""}
    assert_drawn(tmp_path / "unlabelled.gallery.png")
    assert not (tmp_path / "unlabelled.summary.json").exists()  # nothing to compute


def test_gallery_of_a_report_whose_images_are_gone_names_them_and_draws_the_rest(
    tmp_path: Path,
) -> None:
    names = [name for name, _, _ in ROWS]
    write_images(tmp_path / "images", [n for n in names if n not in ("blue/b.png", "red/e.png")])
    report = tmp_path / "images-rgb.csv"
    write_report(report, ROWS)
    result = run_cli("report", report, "--gallery", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if "missing" in line]
    assert len(lines) == 1, result.stderr
    assert "gallery: 2 of its 6 images missing" in lines[0]
    assert "blue/b.png" in lines[0] and "red/e.png" in lines[0]
    assert not any(n in lines[0] for n in names if n not in ("blue/b.png", "red/e.png"))
    cards = parse(tmp_path / "images-rgb.gallery.html").cards
    assert [c["path"] for c in cards] == expected_gallery(report_rows(report), 48)
    pictures = {c["path"]: c["src"] for c in cards}
    assert pictures.pop("blue/b.png") == pictures.pop("red/e.png") == "missing"
    for name, uri in pictures.items():
        expected = np.asarray(Image.open(tmp_path / "images" / name).convert("RGB"))
        assert np.array_equal(decoded(uri), expected)
    assert_drawn(tmp_path / "images-rgb.gallery.png")


def test_gallery_of_a_report_without_a_classified_row_warns_and_draws_nothing(
    tmp_path: Path,
) -> None:
    report = tmp_path / "images-rgb.csv"
    with ReportWriter(report, RGB_CLASSES) as writer:
        for name, true in (("blue/a.png", "blue"), ("red/b.png", "red")):
            writer.write(ReportRow(name, "rgb", 1, true_label=true, error="cannot decode image"))
        writer.commit()
    result = run_cli("report", report, "--gallery", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"warning: gallery: {report} has no classified row; no gallery written" in (
        result.stderr
    )
    assert not list(tmp_path.glob("*gallery*"))

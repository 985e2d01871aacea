#!/usr/bin/env python
"""`make demo`: train a tiny model on synthetic images, then classify a held-out folder with it.

The fuller product demo (server + clfbatch on the shipped models) replaces this as those land.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import numpy as np  # noqa: E402

from batch.metrics import ClassificationMetrics  # noqa: E402
from serve.loader import load  # noqa: E402
from serve.preprocess import preprocess_bytes  # noqa: E402
from serve.repository import resolve  # noqa: E402
from tests.conftest import train_tiny  # noqa: E402


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="clf-demo-") as scratch:
        root = Path(scratch)
        path = train_tiny(root / "trained", "demo", "rgb", root / "data")
        version = resolve(root / "trained", "demo")
        classifier = load(version)
        files = sorted((root / "data" / "test").rglob("*.png"))
        labels = version.manifest.classes
        batch = np.stack(
            [preprocess_bytes(f.read_bytes(), version.manifest.preprocessing) for f in files]
        )
        predicted = classifier.predict(batch).argmax(axis=1)
        truth = [labels.index(f.parent.name) for f in files]
        print(f"\nclassified {len(files)} held-out images with {path}")
        print(ClassificationMetrics.compute(labels, truth, predicted).report_text())


if __name__ == "__main__":
    main()

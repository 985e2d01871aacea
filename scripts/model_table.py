#!/usr/bin/env python
"""Print the README's model table: every version in a repository with its manifest facts and
its in-process throughput (images/s through the SavedModel signature) at batch 1 and 256.

    python scripts/model_table.py --repository trained [--seconds 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from serve.loader import load
from serve.repository import ModelVersion, scan

TUTORIAL_ACCURACY = {
    "mnist": "98.5–98.9%",
    "cifar10": "71.5–83.6%",
    "homer_bart": "93%",
    "blood_cells": "not reported",
    "faces": "82.5%",
}


def throughput(version: ModelVersion, batch: int, seconds: float) -> float:
    """Images per second of repeated predict calls on one fixed batch."""
    classifier = load(version)
    images = np.random.default_rng(0).random((batch, *version.manifest.input_shape), np.float32)
    classifier.predict(images)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        classifier.predict(images)
        done += batch
    return done / (time.perf_counter() - started)


def row(version: ModelVersion, seconds: float) -> str:
    manifest = version.manifest
    training = manifest.training
    height, width, channels = manifest.input_shape
    accuracy = manifest.test_accuracy or 0.0
    minutes = training.get("wall_time_seconds", 0) / 60
    cells = [
        f"`{version.name}`",
        str(version.version),
        f"{manifest.architecture}",
        f"{training.get('parameters', 0):,}",
        f"{height}×{width}×{channels}",
        f"**{accuracy:.2%}**",
        TUTORIAL_ACCURACY.get(training.get("task_spec", version.name), "—"),
        f"{training.get('epochs_run', '?')} ep, {minutes:.0f} min",
        f"{throughput(version, 1, seconds):,.0f}",
        f"{throughput(version, 256, seconds):,.0f}",
    ]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repository", type=Path, default=Path("trained"))
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    print(
        "| task | version | architecture | parameters | input | test accuracy | tutorial "
        "| training | img/s batch 1 | img/s batch 256 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for versions in scan(args.repository).values():
        for version in versions:
            print(row(version, args.seconds), flush=True)


if __name__ == "__main__":
    main()

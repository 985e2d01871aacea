#!/usr/bin/env python
"""`make demo`: the product on the shipped models, end to end, in a couple of minutes.

1. `clfbatch models` lists the shipped repository;
2. a folder of handwriting-like digits is drawn here with Pillow (no dataset image is used),
   one sub-folder per digit, so the true labels are known;
3. `clfserve` starts on the shipped `trained/` models;
4. `clfbatch run` classifies the folder in-process, then again through the server;
5. both reports are compared row by row and the server is stopped.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
MODEL = "mnist"


def draw_digits(folder: Path, per_digit: int = 20, seed: int = 0) -> int:
    """White digits on black, 28x28, varied in size, slant and stroke, placed as MNIST was."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    rng = random.Random(seed)
    count = 0
    for digit in range(10):
        (folder / str(digit)).mkdir(parents=True, exist_ok=True)
        for index in range(per_digit):
            canvas = Image.new("L", (84, 84), 0)  # drawn large, then reduced as MNIST was
            font = ImageFont.load_default(size=rng.randint(54, 66))
            draw = ImageDraw.Draw(canvas)
            draw.text(
                (42, 42),
                str(digit),
                fill=255,
                font=font,
                anchor="mm",
                stroke_width=rng.randint(0, 1),
                stroke_fill=255,
            )
            canvas = canvas.rotate(rng.uniform(-12, 12), resample=Image.Resampling.BILINEAR)
            canvas = canvas.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.7)))
            box = canvas.getbbox() or (0, 0, 84, 84)
            digit_image = canvas.crop(box)
            scale = 20 / max(digit_image.size)  # MNIST: the digit fits a 20x20 box
            size = (
                max(1, round(digit_image.width * scale)),
                max(1, round(digit_image.height * scale)),
            )
            digit_image = digit_image.resize(size, Image.Resampling.LANCZOS)
            # MNIST centres the 20x20 box on the centre of mass of a 28x28 canvas.
            pixels = np.asarray(digit_image, dtype=np.float64)
            total = pixels.sum() or 1.0
            cy = (pixels.sum(axis=1) * np.arange(pixels.shape[0])).sum() / total
            cx = (pixels.sum(axis=0) * np.arange(pixels.shape[1])).sum() / total
            final = Image.new("L", (28, 28), 0)
            final.paste(digit_image, (round(14 - cx), round(14 - cy)))
            final.save(folder / str(digit) / f"drawn_{index:02d}.png")
            count += 1
    return count


def clfbatch(*args: str | Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "batch", *map(str, args)]
    print(f"\n$ clfbatch {' '.join(map(str, args))}", flush=True)
    result = subprocess.run(command, env=ENV, cwd=ROOT, text=True, capture_output=True)
    print(result.stdout, end="", flush=True)
    lines = [line for line in result.stderr.splitlines() if line.startswith(("clfbatch", "warn"))]
    print("\n".join(lines), file=sys.stderr, flush=True)
    if result.returncode != 0:
        sys.exit(f"demo: clfbatch exited with {result.returncode}")
    return result


def start_server(scratch: Path) -> tuple[subprocess.Popen[bytes], str]:
    from serve.client import Client

    port_file = scratch / "port"
    command = [
        sys.executable,
        "-m",
        "serve",
        "--repository",
        str(ROOT / "trained"),
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--port-file",
        str(port_file),
        "--metrics-port",
        "off",
        "--no-watch",
    ]
    print("\n$ clfserve --repository trained --port 0 ...", flush=True)
    log = (scratch / "clfserve.log").open("wb")
    server = subprocess.Popen(command, env=ENV, cwd=ROOT, stdout=log, stderr=log)
    deadline = time.monotonic() + 120
    while not (port_file.exists() and port_file.read_text().strip()):
        if server.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"demo: clfserve did not start; see {scratch / 'clfserve.log'}")
        time.sleep(0.1)
    target = f"127.0.0.1:{port_file.read_text().strip()}"
    with Client(target) as client:
        client.wait_ready(max(1.0, deadline - time.monotonic()))
        models = ", ".join(f"{m.name} v{m.default_version}" for m in client.list_models())
    print(f"clfserve is serving {models} on {target}", flush=True)
    return server, target


def compare(local: Path, remote: Path) -> None:
    from batch.report import read_report

    pairs = list(zip(read_report(local), read_report(remote), strict=True))
    same = sum(a.path == b.path and a.predicted == b.predicted for a, b in pairs)
    gap = max(
        (
            abs(x - y)
            for a, b in pairs
            for x, y in zip(a.probabilities, b.probabilities, strict=True)
        ),
        default=0.0,
    )
    print(
        f"\nin-process vs server: {same}/{len(pairs)} identical predictions, "
        f"largest probability difference {gap:.1e}",
        flush=True,
    )


def main() -> None:
    if not (ROOT / "trained" / MODEL).is_dir():
        sys.exit(f"demo: the shipped model trained/{MODEL} is missing")
    clfbatch("models")
    with tempfile.TemporaryDirectory(prefix="clf-demo-") as scratch_name:
        scratch = Path(scratch_name)
        folder = scratch / "digits"
        count = draw_digits(folder)
        (folder / "notes.txt").write_text("not an image: skipped and counted\n")
        (folder / "7" / "torn.png").write_bytes((folder / "7" / "drawn_00.png").read_bytes()[:50])
        print(f"\ndrew {count} digits (+1 truncated file, +1 text file) into {folder}")
        server, target = start_server(scratch)
        try:
            clfbatch("run", folder, "--model", MODEL, "--out", scratch / "local.csv")
            clfbatch(
                "run",
                folder,
                "--model",
                MODEL,
                "--server",
                target,
                "--out",
                scratch / "remote.csv",
                "--quiet",
            )
            compare(scratch / "local.csv", scratch / "remote.csv")
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)
            print(f"clfserve stopped (exit code {server.returncode})")
        print("\nfirst rows of the report:")
        print("\n".join((scratch / "local.csv").read_text().splitlines()[:4]))


if __name__ == "__main__":
    main()

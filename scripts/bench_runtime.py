#!/usr/bin/env python
"""Model-call speed and agreement of each inference runtime on every shipped version.

    python scripts/bench_runtime.py                      # `make bench-runtime`, synthetic inputs
    python scripts/bench_runtime.py --seconds 3 --models mnist cifar10
    python scripts/bench_runtime.py --data ../shared/datasets/cifar10.tar.gz --models cifar10

Runtimes: TensorFlow (the SavedModel signature, as serve.loader calls it), LiteRT (the version's
model.tflite through serve.litert, XNNPACK), and ONNX Runtime (tf2onnx conversion) when tf2onnx
and onnxruntime import. For each batch size it prints images/s and the median call latency; for
each runtime the largest probability difference and the argmax agreement against TensorFlow,
on synthetic inputs or (`--data`, archives unpacked under /tmp) on the test split.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from serve.artefacts import litert_model  # noqa: E402
from serve.litert import SINGLE_THREAD_BATCH, LiteRTClassifier, default_threads  # noqa: E402
from serve.loader import SavedModelClassifier  # noqa: E402
from serve.repository import ModelVersion, scan  # noqa: E402

Predict = Callable[[np.ndarray], np.ndarray]
SIZES = (1, 8, 32, 256)


def onnx_predict(version: ModelVersion) -> Predict:
    """The SavedModel signature converted by tf2onnx, run by ONNX Runtime's CPU provider."""
    import onnxruntime as ort
    import tensorflow as tf
    import tf2onnx

    signature = version.manifest.signature
    loaded = tf.saved_model.load(str(version.path))  # must outlive the traced graph
    function = loaded.signatures[signature.name]
    spec = (tf.TensorSpec([None, *version.manifest.input_shape], tf.float32, name="images"),)
    graph = tf.function(lambda images: function(**{signature.input: images})[signature.output])
    proto, _ = tf2onnx.convert.from_function(graph, input_signature=spec, opset=17)
    options = ort.SessionOptions()
    options.intra_op_num_threads = default_threads()
    session = ort.InferenceSession(proto.SerializeToString(), options, ["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def predict(batch: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(None, {name: batch})[0], dtype=np.float32)

    predict.loaded = loaded  # type: ignore[attr-defined]  # keeps the variables alive
    return predict


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[-1][:150] if lines else ''}"


def runtimes(version: ModelVersion) -> dict[str, Predict | str]:
    """Each runtime's predict, or the reason it is not available."""
    manifest = version.manifest
    tensorflow = SavedModelClassifier(str(version.path), manifest)
    found: dict[str, Predict | str] = {"tensorflow": tensorflow.predict}
    try:
        flatbuffer, _ = litert_model(version)
        lite = LiteRTClassifier(flatbuffer, manifest.classes, manifest.input_shape)
        found["litert"] = lite.predict
    except Exception as exc:
        found["litert"] = f"unavailable: {_first_line(exc)}"
    try:
        found["onnxruntime"] = onnx_predict(version)
    except ImportError as exc:
        found["onnxruntime"] = f"not installed ({exc.name})"
    except Exception as exc:
        found["onnxruntime"] = f"conversion failed: {_first_line(exc)}"
    return found


def inputs(version: ModelVersion, data: Path | None, count: int) -> np.ndarray:
    """The test split of `data` (preprocessed as served) or `count` synthetic images."""
    pre = version.manifest.preprocessing
    if data is None:
        pixels = np.random.default_rng(0).integers(0, 256, (count, *pre.input_shape))
        return (pixels * pre.scale + pre.offset).astype(np.float32)
    os.environ.setdefault("CLFSERVE_CACHE", "/tmp/clfserve-bench")  # unpack datasets in /tmp
    from training.data import find_root, load_split

    return load_split(find_root(data) / "test", pre).images


def predict_all(predict: Predict, images: np.ndarray) -> np.ndarray:
    return np.concatenate([predict(images[i : i + 256]) for i in range(0, len(images), 256)])


def agreement(predict: Predict, reference: np.ndarray, images: np.ndarray) -> tuple[float, float]:
    """Largest probability difference and argmax agreement against `reference` outputs."""
    probs = predict_all(predict, images)
    difference = float(np.max(np.abs(probs - reference)))
    return difference, float(np.mean(probs.argmax(1) == reference.argmax(1)))


def speed(predict: Predict, images: np.ndarray, size: int, seconds: float) -> tuple[float, float]:
    """Images/s and median call latency (ms) of `predict` at one batch size."""
    batch = np.ascontiguousarray(np.resize(images, (size, *images.shape[1:])))
    predict(batch)
    times: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 3:
        start = time.perf_counter()
        predict(batch)
        times.append(time.perf_counter() - start)
    return size * len(times) / sum(times), float(np.median(times)) * 1e3


def bench(version: ModelVersion, args: argparse.Namespace) -> None:
    images = inputs(version, args.data, args.images)
    found = runtimes(version)
    tensorflow = found["tensorflow"]
    assert callable(tensorflow)
    reference = predict_all(tensorflow, images)
    print(f"\n{version.name} v{version.version} ({version.manifest.architecture}, "
          f"{'x'.join(map(str, version.manifest.input_shape))}, {len(images)} images)")  # fmt: skip
    print(f"  {'runtime':<12}" + "".join(f"{f'batch {s}: img/s  p50 ms':>26}" for s in args.sizes)
          + f"{'max |dp|':>10}{'argmax':>9}")  # fmt: skip
    for name, predict in found.items():
        if isinstance(predict, str):
            print(f"  {name:<12}{predict}")
            continue
        cells = [speed(predict, images, size, args.seconds) for size in args.sizes]
        difference, agree = agreement(predict, reference, images)
        print(f"  {name:<12}" + "".join(f"{rate:>16.0f} {p50:>8.3f}" for rate, p50 in cells)
              + f"{difference:>10.1e}{agree:>9.2%}", flush=True)  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--repository", type=Path, default=ROOT / "trained")
    parser.add_argument("--models", nargs="*", help="model names (default: all)")
    parser.add_argument("--sizes", nargs="*", type=int, default=list(SIZES))
    parser.add_argument("--seconds", type=float, default=1.0, help="timed seconds per point")
    parser.add_argument("--images", type=int, default=512, help="synthetic images")
    parser.add_argument("--data", type=Path, help="a dataset archive: use its test split")
    args = parser.parse_args()
    threads = default_threads()
    print(f"threads: LiteRT {default_threads(1)} up to batch {SINGLE_THREAD_BATCH}, then {threads};"
          f" ONNX Runtime {threads}; load: {os.getloadavg()}")  # fmt: skip
    for name, versions in scan(args.repository).items():
        if not args.models or name in args.models:
            for version in versions:
                bench(version, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The data plane's request checks, on a version loaded by a fake loader (no TensorFlow)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from serve.dataplane import ClassifyRequest, DataPlane, TensorInput
from serve.errors import InvalidInput
from tests.serve.conftest import make_settings
from tests.serve.test_registry import Uniform, write_version


def test_a_negative_top_k_is_invalid_input(tmp_path: Path) -> None:
    write_version(tmp_path, "toy", 1)
    plane = DataPlane(make_settings(tmp_path), loader=lambda _: Uniform())  # no on_change hook
    pixels = TensorInput(np.zeros((2, 2, 1), np.float32), preprocessed=True)

    async def main() -> None:
        await plane.start()
        try:
            with pytest.raises(InvalidInput, match=r"^top_k must be >= 0, not -1$"):
                await plane.classify(ClassifyRequest("toy", [pixels], top_k=-1))
            answer = await plane.classify(ClassifyRequest("toy", [pixels], top_k=2))
            assert answer.top_k == [[("a", 0.5), ("b", 0.5)]]
        finally:
            await plane.close()

    asyncio.run(main())
    labels = {"model": "toy", "version": "1", "code": "INVALID_ARGUMENT"}
    assert plane.metrics.registry.get_sample_value("clfserve_requests_total", labels) == 1

"""The training precision: a recipe's mixed_bfloat16 only where the CPU does bfloat16 natively."""

from __future__ import annotations

from pathlib import Path

import pytest
from training.recipe import cpu_flags, training_precision

ICE_LAKE = "fpu sse2 avx2 fma avx512f avx512bw avx512vl avx512_vnni avx512_vbmi2 avx512_bitalg"
SAPPHIRE_RAPIDS = ICE_LAKE + " avx512_bf16 amx_bf16 amx_tile amx_int8"


def cpuinfo(tmp_path: Path, flags: str) -> Path:
    """A two-processor /proc/cpuinfo as Linux writes it."""
    block = f"processor\t: {{n}}\nmodel name\t: Intel(R) Xeon(R)\nflags\t\t: {flags}\n\n"
    path = tmp_path / "cpuinfo"
    path.write_text(block.format(n=0) + block.format(n=1))
    return path


@pytest.mark.parametrize(
    ("flags", "expected"),
    [(ICE_LAKE, "float32"), (SAPPHIRE_RAPIDS, "mixed_bfloat16"), ("avx512_bf16", "mixed_bfloat16")],
    ids=["no-bf16", "amx", "avx512-bf16-only"],
)
def test_bfloat16_only_where_native(tmp_path: Path, flags: str, expected: str) -> None:
    assert training_precision("mixed_bfloat16", cpu_flags(cpuinfo(tmp_path, flags))) == expected


def test_other_recipes_and_unknown_machines_keep_their_precision(tmp_path: Path) -> None:
    no_bf16 = cpu_flags(cpuinfo(tmp_path, ICE_LAKE))
    assert training_precision("float32", no_bf16) == "float32"
    assert training_precision("mixed_float16", no_bf16) == "mixed_float16"
    assert cpu_flags(tmp_path / "absent") is None  # not Linux: nothing known
    assert training_precision("mixed_bfloat16", None) == "mixed_bfloat16"


def test_flags_are_read_as_whole_words(tmp_path: Path) -> None:
    flags = cpu_flags(cpuinfo(tmp_path, ICE_LAKE))
    assert flags is not None and "avx512_vnni" in flags and "avx512" not in flags
    (tmp_path / "empty").write_text("processor\t: 0\n")
    assert cpu_flags(tmp_path / "empty") == frozenset()

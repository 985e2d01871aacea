#!/usr/bin/env python
"""Generate Python code (+ .pyi stubs) for every .proto under protos/ into serve/grpc/_proto/.

python scripts/gen_protos.py          # regenerate
python scripts/gen_protos.py --check  # fail if the committed code differs from a fresh run
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUTPUT = ROOT / "serve" / "grpc" / "_proto"
# Proto packages that client libraries also put in protobuf's default descriptor pool
# (tritonclient registers `inference.*`): our code for them gets a private pool, so that one
# process can import both.
PRIVATE_POOL_PACKAGES = ("inference",)


def generate(target: Path) -> None:
    import grpc_tools
    from grpc_tools import protoc

    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    target.mkdir(parents=True, exist_ok=True)
    (target / "__init__.py").write_text('"""Generated protobuf and gRPC code: do not edit."""\n')
    if not sources:
        return
    include = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{include}",
        f"--python_out={target}",
        f"--grpc_python_out={target}",
        f"--mypy_out={target}",
        # the venv's plugin, so `make protos` works without the venv on PATH
        f"--plugin=protoc-gen-mypy={Path(sys.executable).parent / 'protoc-gen-mypy'}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for package in PRIVATE_POOL_PACKAGES:  # one file per package: no cross-file imports
        for module in (target / package).rglob("*_pb2.py"):
            text = module.read_text().replace(
                "_descriptor_pool.Default()", "_descriptor_pool.DescriptorPool()", 1
            )
            module.write_text(text)
    for folder in {p.parent for p in target.rglob("*_pb2.py")}:
        init = folder / "__init__.py"
        if not init.exists():
            init.write_text("")


def differences(left: Path, right: Path) -> list[str]:
    left_files = {
        p.relative_to(left) for p in left.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    }
    right_files = {
        p.relative_to(right)
        for p in right.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    changed = [str(p) for p in left_files ^ right_files]
    changed += [
        str(p)
        for p in left_files & right_files
        if not filecmp.cmp(left / p, right / p, shallow=False)
    ]
    return sorted(changed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    check = parser.parse_args().check
    with tempfile.TemporaryDirectory() as scratch:
        fresh = Path(scratch) / "_proto"
        generate(fresh)
        if check:
            changed = (
                differences(fresh, OUTPUT) if OUTPUT.exists() else ["serve/grpc/_proto missing"]
            )
            if changed:
                print("generated code is stale; run `make protos`:", *changed, sep="\n  ")
                return 1
            print("generated protobuf code is up to date")
            return 0
        shutil.rmtree(OUTPUT, ignore_errors=True)
        shutil.copytree(fresh, OUTPUT)
        print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

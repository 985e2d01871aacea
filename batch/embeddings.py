"""`clfbatch run --embeddings FILE`: one float32 vector per classified file, for similarity
search and clustering downstream.

FILE is a NumPy `.npy` array float32 [files, dimension] (the penultimate layer of the model:
`serve.embedding`); beside it `<FILE stem>.json` gives the row order (`paths`, as the report's
`path` column names them, in report order; files that could not be classified have no row) with
the model, version, layer and dimension. Both are written to `.partial` files while the run goes
and renamed when it completes, as the report is.

    recorder = open_recorder(backend, settings.embeddings, repository=..., server=..., access=...)
    rows = classify_files(recorder, files)   # classifies and embeds the same batches
    recorder.add_paths(paths_of_classified_rows); recorder.commit()
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from batch.backends import Backend, ServerAccess
from batch.errors import BatchError
from serve.errors import ModelNotFound, ServeError
from serve.manifest import Preprocessing
from serve.repository import resolve

_HEADER = 128  # bytes reserved for the .npy header: the row count is known only at the end
_MAX_IMAGES = 128  # per Embed request, as batch.backends keeps classify requests
_MAX_REQUEST_BYTES = 8 * 1024 * 1024
Embed = Callable[[np.ndarray], np.ndarray]


def sidecar(path: Path) -> Path:
    """The row order file beside an embeddings file: `vectors.npy` -> `vectors.json`."""
    return path.with_suffix(".json")


def _npy_header(rows: int, dimension: int) -> bytes:
    """A version 1.0 .npy header of exactly _HEADER bytes for float32 [rows, dimension]."""
    text = f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {dimension}), }}"
    body = text.ljust(_HEADER - 10 - 1) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(body)) + body.encode("latin1")


class NpyStream:
    """Rows appended to `<path>.partial` as they come; `commit()` writes the shape, renames."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.partial = path.with_name(path.name + ".partial")
        self._file = self.partial.open("wb")
        self._file.write(_npy_header(0, 0))
        self.rows = 0
        self.dimension: int | None = None

    def add(self, vectors: np.ndarray) -> None:
        array = np.ascontiguousarray(vectors, dtype="<f4")
        if (  # pragma: no cover - one model version embeds into one shape
            array.ndim != 2 or (self.dimension is not None and array.shape[1] != self.dimension)
        ):
            raise ServeError(f"embeddings of shape {list(array.shape)} after {self.dimension}")
        self.dimension = int(array.shape[1])
        self._file.write(array.tobytes())
        self.rows += len(array)

    def commit(self) -> None:
        self._file.seek(0)
        self._file.write(_npy_header(self.rows, self.dimension or 0))
        self._file.close()
        os.replace(self.partial, self.path)

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


class EmbeddingRecorder:
    """A Backend that classifies with `backend` and embeds the same batch with `embed`."""

    def __init__(
        self,
        backend: Backend,
        embed: Embed,
        out: Path,
        meta: dict[str, Any],
        release: Callable[[], None] | None = None,
    ) -> None:
        self.backend = backend
        self._release = release
        self.model = backend.model
        self.version = backend.version
        self.labels = backend.labels
        self.preprocessing: Preprocessing = backend.preprocessing
        self._embed = embed
        self._meta = meta
        self._vectors = NpyStream(out)
        self._paths: list[str] = []
        self.out = out

    def classify(self, batch: np.ndarray) -> np.ndarray:
        probabilities = self.backend.classify(batch)
        self._vectors.add(self._embed(batch))
        return probabilities

    def add_path(self, path: str) -> None:
        """The next classified row's report path (in report order)."""
        self._paths.append(path)

    def commit(self) -> list[Path]:
        """Write both files; raises if the rows and the vectors disagree in number."""
        if (  # pragma: no cover - run_folder adds the path of each embedded (classified) row
            len(self._paths) != self._vectors.rows
        ):
            raise ServeError(
                f"{self._vectors.rows} embeddings for {len(self._paths)} classified files"
            )
        order = sidecar(self.out)
        partial = order.with_name(order.name + ".partial")
        doc = {**self._meta, "dimension": self._vectors.dimension, "paths": self._paths}
        partial.write_text(json.dumps(doc, indent=1) + "\n")
        self._vectors.commit()
        os.replace(partial, order)
        return [self.out, order]

    def close(self) -> None:
        """Close the files (a run that failed leaves `.partial` ones) and the embedder."""
        self._vectors.close()
        if self._release is not None:
            self._release()


Opened = tuple[Embed, dict[str, Any], Callable[[], None] | None]


def _local(backend: Backend, repository: Path) -> Opened:
    from serve.loader import SavedModelClassifier  # TensorFlow: embeddings never run on LiteRT

    version = resolve(repository, backend.model, backend.version)
    manifest = version.manifest
    if manifest.embedding is None:
        from serve.embedding import EmbeddingNotFound

        raise BatchError(str(EmbeddingNotFound(version.name, version.version, version.path)))
    model = SavedModelClassifier(str(version.path), manifest)
    return model.embed, {"layer": manifest.embedding.layer}, None


def _remote(backend: Backend, server: str, access: ServerAccess) -> Opened:
    from serve.client import Client

    client = Client(
        server, tls_ca=access.tls_ca, tls_cert=access.tls_cert, tls_key=access.tls_key,
        token=access.token, timeout=60.0,
    )  # fmt: skip
    model, version = backend.model, backend.version
    shape = backend.preprocessing.input_shape
    try:  # fail before any file is read, with the server's message (it names scripts/convert.py)
        probe = client.embed(model, [np.zeros(shape, np.float32)], version=version,
                             preprocessed=True)  # fmt: skip
    except ModelNotFound as exc:
        client.close()
        raise BatchError(f"--embeddings: {exc}") from None
    except BaseException:  # pragma: no cover - RemoteBackend reached this server just before
        client.close()
        raise

    def embed(batch: np.ndarray) -> np.ndarray:
        per_request = max(1, min(_MAX_IMAGES, _MAX_REQUEST_BYTES // max(1, batch[0:1].nbytes)))
        parts: Sequence[np.ndarray] = [
            client.embed(
                model, list(batch[start : start + per_request]), version=version,
                preprocessed=True,
            ).vectors
            for start in range(0, len(batch), per_request)
        ]  # fmt: skip
        return np.concatenate(parts)

    return embed, {"layer": probe.layer}, client.close


@contextlib.contextmanager
def recording(
    out: Path | None,
    backend: Backend,
    *,
    repository: Path,
    server: str | None,
    access: ServerAccess,
    force: bool = False,
) -> Iterator[EmbeddingRecorder | None]:
    """`open_recorder` as a context (None when `out` is None); closed on the way out."""
    if out is None:
        yield None
        return
    recorder = open_recorder(
        backend, out, repository=repository, server=server, access=access, force=force
    )
    try:
        yield recorder
    finally:
        recorder.close()


def open_recorder(
    backend: Backend,
    out: Path,
    *,
    repository: Path,
    server: str | None,
    access: ServerAccess,
    force: bool = False,
) -> EmbeddingRecorder:
    """The recording backend; raises BatchError (exit 2) for a bad FILE or a version without
    embeddings (the message names the command that adds them)."""
    if out.suffix != ".npy":
        raise BatchError(f"--embeddings {out}: the file must end in .npy")
    if not out.parent.is_dir():
        raise BatchError(f"--embeddings {out}: {out.parent} is not a folder")
    if out.exists() and not force:
        raise BatchError(f"{out} exists; pass --force to overwrite it")
    embed, extra, release = (
        _remote(backend, server, access) if server else _local(backend, repository)
    )
    meta = {"model": backend.model, "version": backend.version, **extra}
    return EmbeddingRecorder(backend, embed, out, meta, release)

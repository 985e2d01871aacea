"""Plain image upload: send a picture, get labels back.

    curl -F file=@digit.png localhost:8501/v1/models/mnist/classify
    curl --data-binary @digit.png -H 'Content-Type: image/png' \
        'localhost:8501/v1/models/mnist/versions/2/classify?top_k=3'

One image as the raw body (`Content-Type: image/*` or `application/octet-stream`) or several as
`multipart/form-data` files (in order; an error names the input index). The answer, per image:
label, confidence, the `top_k` best (default 3) and the model version that answered.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from serve.dataplane import ClassifyRequest, ImageInput
from serve.digits import ascii_digits
from serve.errors import InvalidInput
from serve.http.app import plane

DEFAULT_TOP_K = 3


def _top_k(request: web.Request) -> int:
    text = request.query.get("top_k", str(DEFAULT_TOP_K))
    if not ascii_digits(text) or int(text) < 1:
        raise InvalidInput(f"top_k must be a positive integer, not {text!r}")
    return int(text)


def _version(request: web.Request) -> int | None:
    text = request.match_info.get("version")
    if text is None:
        return None
    if not ascii_digits(text):
        raise InvalidInput(f"version must be a non-negative integer, not {text!r}")
    return int(text)


async def _images(request: web.Request) -> tuple[list[str], list[ImageInput]]:
    """(file names, images) from a multipart form (its file fields) or the raw body."""
    kind = request.content_type
    if kind == "multipart/form-data":
        form = await request.post()
        files = [v for v in form.values() if isinstance(v, web.FileField)]
        if not files:
            raise InvalidInput("the form has no file fields (curl -F file=@image.png ...)")
        return [f.filename for f in files], [ImageInput(f.file.read()) for f in files]
    if kind.startswith("image/") or kind == "application/octet-stream":
        return [""], [ImageInput(await request.read())]
    raise web.HTTPUnsupportedMediaType(
        text=f"send an image (Content-Type image/*) or multipart/form-data files, not {kind!r}"
    )


async def classify(request: web.Request) -> web.Response:
    name, version, k = request.match_info["model"], _version(request), _top_k(request)
    names, images = await _images(request)
    result = await plane(request).classify(ClassifyRequest(name, images, version, top_k=k))
    predictions: list[dict[str, Any]] = []
    for file, ranked in zip(names, result.top_k, strict=True):
        label, confidence = ranked[0]
        item = {"label": label, "confidence": confidence, "version": result.version}
        top = [{"label": lab, "score": score} for lab, score in ranked]
        predictions.append({**({"file": file} if file else {}), **item, "top_k": top})
    return web.json_response(
        {"model": result.model, "version": result.version, "predictions": predictions}
    )


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/models/{model:[^/:]+}/classify", classify)
    app.router.add_post("/v1/models/{model:[^/:]+}/versions/{version:[^/:]+}/classify", classify)

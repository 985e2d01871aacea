"""The gallery as one self-contained HTML page: thumbnails as data: URIs, bars as CSS, and a
few lines of inline JavaScript to filter by class and sort. No external asset is referenced.

    write_html(items, labels, Path("run.gallery.html"), "run.csv", missing=[])

Each card carries `data-rank` (its place in the gallery order), `data-path`, `data-predicted`,
`data-true`, `data-confidence` and `data-wrong`, which the script (and the tests) read.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from html import escape
from pathlib import Path

import numpy as np
from PIL import Image

from batch.gallery import BOTH, PREDICTED, TRUE, GalleryItem, bar_colour, shown_classes, title

_CSS = """
body{font:13px system-ui,sans-serif;margin:16px;color:#222}
#grid{display:flex;flex-wrap:wrap;gap:10px}
.card{display:flex;gap:8px;border:1px solid #ddd;border-radius:6px;padding:6px;width:330px}
.card.wrong{border-color:#d62728}
.card img,.missing{width:96px;height:96px;object-fit:contain;image-rendering:pixelated;
  flex:none;background:#f4f4f4}
.missing{display:flex;align-items:center;justify-content:center;color:#888;font-size:11px}
.t{font-weight:600}.wrong .t{color:#d62728}.right .t{color:#2ca02c}
.p{color:#888;font-size:10px;word-break:break-all}
.bar{display:flex;align-items:center;font-size:10px;line-height:12px}
.bar span{width:80px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.bar i{display:block;height:9px;background:#ccc;margin-left:4px}
.note{color:#b35900}
"""

# Filter: a card stays when its predicted or true class is the chosen one. Sort: by the chosen
# key, gallery order breaking ties.
_JS = """
const grid=document.getElementById('grid'),cards=[...grid.children];
const keys={rank:c=>+c.dataset.rank,conf:c=>+c.dataset.confidence,
  confdesc:c=>-c.dataset.confidence,predicted:c=>c.dataset.predicted,true:c=>c.dataset.true};
function update(){
  const cls=document.getElementById('cls').value,key=keys[document.getElementById('by').value];
  cards.sort((a,b)=>{const x=key(a),y=key(b);return x<y?-1:x>y?1:a.dataset.rank-b.dataset.rank;});
  for(const c of cards){c.hidden=!!cls&&c.dataset.predicted!==cls&&c.dataset.true!==cls;
    grid.append(c);}
}
document.getElementById('cls').onchange=update;document.getElementById('by').onchange=update;
"""

_EXACT_PX = 64
_CSS_COLOURS = {BOTH: "#2ca02c", PREDICTED: "#ff7f0e", TRUE: "#1f77b4"}


def data_uri(pixels: np.ndarray) -> str:
    """RGB pixels as a `data:` URI: PNG (exact) up to 64 px, JPEG above (photos: 5-10x smaller)."""
    buffer = io.BytesIO()
    small = max(pixels.shape[:2]) <= _EXACT_PX
    Image.fromarray(pixels).save(buffer, format="PNG" if small else "JPEG", quality=85)
    kind = "png" if small else "jpeg"
    return f"data:image/{kind};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _bars(item: GalleryItem, labels: Sequence[str]) -> str:
    lines = []
    for index in shown_classes(labels, item):
        label, p = labels[index], item.probabilities[index]
        colour = _CSS_COLOURS.get(bar_colour(label, item.row) or "", "#ccc")
        width = round(max(p, 0.0) * 150, 1)
        lines.append(
            f'<div class="bar"><span title="{escape(label)}">{escape(label)}</span>'
            f'<i style="width:{width}px;background:{colour}"></i>&nbsp;{p:.2f}</div>'
        )
    return "".join(lines)


def card(item: GalleryItem, rank: int, labels: Sequence[str]) -> str:
    """One thumbnail with its title, path and probability bars."""
    row = item.row
    state = "" if row.correct is None else ("wrong" if item.wrong else "right")
    if item.image is not None:
        picture = f'<img alt="{escape(row.path)}" src="{data_uri(item.image)}">'
    else:
        picture = '<div class="missing">file missing</div>'
    attributes = {
        "rank": str(rank),
        "path": row.path,
        "predicted": row.predicted or "",
        "true": row.true_label or "",
        "confidence": f"{row.confidence or 0.0:.6f}",
        "wrong": str(item.wrong).lower(),
    }
    data = " ".join(f'data-{key}="{escape(value)}"' for key, value in attributes.items())
    return (
        f'<div class="card {state}" {data}>{picture}<div>'
        f'<div class="t">{escape(title(row))}</div><div class="p">{escape(row.path)}</div>'
        f"{_bars(item, labels)}</div></div>"
    )


def render(
    items: Sequence[GalleryItem], labels: Sequence[str], name: str, missing: Sequence[str]
) -> str:
    """The whole page as a string."""
    wrong = sum(item.wrong for item in items)
    labelled = any(item.row.correct is not None for item in items)
    what = (
        f"{wrong} misclassified, then the {len(items) - wrong} least confident others"
        if labelled
        else f"the {len(items)} least confident predictions"
    )
    options = "".join(f'<option value="{escape(c)}">{escape(c)}</option>' for c in labels)
    note = (
        f'<p class="note">{len(missing)} files missing or unreadable (drawn without their '
        f"picture): {escape(', '.join(missing))}</p>"
        if missing
        else ""
    )
    cards = "\n".join(card(item, rank, labels) for rank, item in enumerate(items))
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(name)}: gallery</title><style>{_CSS}</style></head><body>\n"
        f"<h1>{escape(name)}</h1><p>{escape(what)}. Titles: predicted / true, confidence. "
        "Bars: green = predicted and true, orange = predicted, blue = true.</p>\n"
        f'{note}<p>class <select id="cls"><option value="">all</option>{options}</select> '
        'sort <select id="by"><option value="rank">gallery order</option>'
        '<option value="conf">confidence, lowest first</option>'
        '<option value="confdesc">confidence, highest first</option>'
        '<option value="predicted">predicted class</option>'
        '<option value="true">true class</option></select></p>\n'
        f'<div id="grid">\n{cards}\n</div>\n<script>{_JS}</script>\n</body></html>\n'
    )


def write_html(
    items: Sequence[GalleryItem],
    labels: Sequence[str],
    path: Path,
    name: str,
    missing: Sequence[str],
) -> None:
    """Write the page to `path`."""
    path.write_text(render(items, labels, name, missing), encoding="utf-8")

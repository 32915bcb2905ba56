"""The self-contained report page: inline CSS, figures as base64 data URIs, every text escaped."""
from __future__ import annotations

import base64
import html
import math
from typing import Dict, List, Sequence, Tuple

from .figures import Figure

TEXT_CHARS = 600
SHOWN_PER_COLUMN = 10  # documents listed per column of an example query (the rest are counted)

CSS = """
body{font:15px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d1d1f;background:#fafafa}
main{max-width:1180px;margin:0 auto;padding:24px 28px 60px}
h1{margin:0 0 4px;font-size:26px} h2{margin:36px 0 10px;font-size:20px;border-bottom:1px solid #ddd;padding-bottom:4px}
.meta{color:#666;font-size:13px} .meta code{font-size:12px}
table.kv{border-collapse:collapse;margin:8px 0} table.kv td{padding:3px 14px 3px 0;vertical-align:top}
table.kv td.n{text-align:right;font-variant-numeric:tabular-nums;font-weight:600}
figure{margin:18px 0;background:#fff;border:1px solid #e3e3e3;border-radius:6px;padding:12px}
figure img{max-width:100%;height:auto;display:block;margin:0 auto}
figcaption{font-size:13px;color:#444;margin-top:6px}
.note{background:#fff6e0;border:1px solid #f0d690;border-radius:4px;padding:6px 10px;font-size:13px}
article.q{background:#fff;border:1px solid #e3e3e3;border-radius:6px;padding:12px 14px;margin:16px 0}
article.q h3{margin:0 0 2px;font-size:16px} article.q .qmeta{font-size:12.5px;color:#666;margin-bottom:8px}
.cols{display:grid;grid-template-columns:repeat(3,minmax(0,1fr));gap:12px}
.col h4{margin:0 0 6px;font-size:13.5px;padding:3px 8px;border-radius:3px;color:#fff}
.pos h4{background:#2a9d8f} .rem h4{background:#e4572e} .neg h4{background:#3a6ea5}
.col ol{margin:0;padding-left:0;list-style:none} .col li{margin:0 0 8px;padding:6px 8px;background:#f6f7f8;border-radius:4px}
.col .empty{color:#999;font-size:13px;font-style:italic}
.doc-head{font-size:12px;color:#555;font-variant-numeric:tabular-nums} .doc-head b{color:#111}
.doc-text{font-size:13px;margin-top:2px;white-space:pre-wrap;overflow-wrap:anywhere}
.query{font-size:15px;margin:2px 0 6px;overflow-wrap:anywhere}
@media (max-width:900px){.cols{grid-template-columns:1fr}}
"""


def esc(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def fmt_score(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:.4f}"


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _kv_table(rows: Sequence[Tuple[str, str]]) -> str:
    return "<table class='kv'>" + "".join(f"<tr><td>{esc(k)}</td><td class='n'>{esc(v)}</td></tr>"
                                          for k, v in rows) + "</table>"


def _doc(doc_id: str, score, texts: Dict[str, str], extra: str = "") -> str:
    text = texts.get(doc_id)
    head = f"<div class='doc-head'><b>{esc(fmt_score(score))}</b> · id {esc(doc_id)}{esc(extra)}</div>"
    if text is None:
        return f"<li>{head}</li>"
    short = text if len(text) <= TEXT_CHARS else text[:TEXT_CHARS].rstrip() + " …"
    return f"<li>{head}<div class='doc-text'>{esc(short)}</div></li>"


def _column(cls: str, title: str, items: List[str], empty: str) -> str:
    more = len(items) - SHOWN_PER_COLUMN
    items = items[:SHOWN_PER_COLUMN] + ([f"<li class='empty'>… and {more} more, not shown</li>"] if more > 0 else [])
    body = "<ol>" + "".join(items) + "</ol>" if items else f"<div class='empty'>{esc(empty)}</div>"
    return f"<div class='col {cls}'><h4>{esc(title)}</h4>{body}</div>"


def example_html(row: dict, texts: Dict[str, str]) -> str:
    """One sampled query: the query, then its positives, removed candidates and kept negatives side by side."""
    pos_ids = row.get("positive_ids") or []
    pos_scores = row.get("positive_scores") or [None] * len(pos_ids)
    neg_ids = row.get("negative_ids") or []
    neg_scores = row.get("negative_scores") or [None] * len(neg_ids)
    neg_ranks = row.get("negative_ranks") or [None] * len(neg_ids)
    rem_ids = row.get("removed_ids") or []
    rem_scores = row.get("removed_scores") or [None] * len(rem_ids)
    threshold = row.get("threshold")
    positives = [_doc(d, s, texts, "" if s is None or not math.isnan(s) else " · not found in the corpus")
                 for d, s in zip(pos_ids, pos_scores)]
    removed = [_doc(d, s, texts) for d, s in zip(rem_ids, rem_scores)]
    kept = [_doc(d, s, texts, " · random corpus document" if rk is not None and rk < 0
                 else (f" · rank {rk}" if rk is not None else "")) for d, s, rk in zip(neg_ids, neg_scores, neg_ranks)]
    meta = [f"s⁺ (weakest positive) {fmt_score(row.get('positive_ref'))}"]
    if threshold is not None:
        meta.append(f"threshold: keep s < {fmt_score(threshold)}")
    meta.append(f"{len(neg_ids)} negatives" + (" (short)" if row.get("short") else ""))
    meta.append(f"{len(rem_ids)} removed")
    return (f"<article class='q'><h3>query {esc(row.get('query_id'))}</h3>"
            f"<div class='query'>{esc(row.get('query'))}</div><div class='qmeta'>{esc(' · '.join(meta))}</div>"
            "<div class='cols'>"
            + _column("pos", f"Positives ({len(pos_ids)})", positives, "none")
            + _column("rem", f"Removed: probable false negatives ({len(rem_ids)})", removed, "none removed")
            + _column("neg", f"Kept negatives ({len(neg_ids)})", kept, "no negatives")
            + "</div></article>")


def render_page(*, title: str, meta: Sequence[Tuple[str, str]], numbers: Sequence[Tuple[str, str]],
                figures: Sequence[Figure], examples: Sequence[dict], texts: Dict[str, str],
                sample_note: str, notes: Sequence[str] = ()) -> str:
    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
             "<meta name='viewport' content='width=device-width, initial-scale=1'>",
             f"<title>{esc(title)}</title><style>{CSS}</style></head><body><main>",
             f"<h1>{esc(title)}</h1>",
             "<div class='meta'>" + " · ".join(f"{esc(k)} <code>{esc(v)}</code>" for k, v in meta if v) + "</div>"]
    for note in notes:
        parts.append(f"<p class='note'>{esc(note)}</p>")
    parts.append("<h2>In numbers</h2>" + _kv_table(numbers))
    parts.append("<h2>Figures</h2>")
    for f in figures:
        parts.append(f"<figure id='{esc(f.name.rsplit('.', 1)[0])}'><img src='{data_uri(f.png)}' alt='{esc(f.title)}'>"
                     f"<figcaption>{esc(f.caption)} <a href='{esc(f.name)}'>{esc(f.name)}</a></figcaption></figure>")
    parts.append(f"<h2>Example queries</h2><p class='meta'>{esc(sample_note)}</p>")
    parts.extend(example_html(row, texts) for row in examples)
    parts.append("</main></body></html>\n")
    return "\n".join(parts)


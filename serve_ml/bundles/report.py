"""``serve-ml bundle report``: one self-contained HTML page (and its PNGs) per bundle.

Per gate, the histogram of its reconstruction errors on the held-out rows (normal and
fault) against its threshold; the RUL head's predictions against the truth on the
units it never saw; the identity, provenance and every held-out figure the builder
recorded. Drawn from the bundle alone (its ``evaluation.json``), so the page shows
what the builder measured; ``bundle evaluate`` measures on other data.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from serve_ml.bundles.loader import Bundle
from serve_ml.bundles.manifest import ErrorHistogram, EvaluationFile, RulPairs


def load_evaluation(bundle: Bundle) -> EvaluationFile | None:
    """The builder's held-out figures, or None for a bundle that records none."""
    m = bundle.manifest
    if m.evaluation is None:
        return None
    return EvaluationFile.model_validate_json((bundle.path / m.evaluation.file).read_bytes())


def write_report(bundle: Bundle, out_dir: Path) -> Path:
    """Write ``report.html`` and one PNG per figure into ``out_dir``; return the page."""
    import matplotlib

    matplotlib.use("Agg")  # no display; chosen here, not at import, so nothing else changes backend
    out_dir.mkdir(parents=True, exist_ok=True)
    evaluation = load_evaluation(bundle)
    figures: list[tuple[str, str, bytes]] = []  # title, file name, PNG
    if evaluation is not None:
        for name, hist in evaluation.modalities.items():
            figures.append((f"Gate {name!r}: held-out reconstruction errors", f"gate-{name}.png",
                            _histogram_png(name, hist)))
        if evaluation.rul is not None and evaluation.rul.truth:
            figures.append(("RUL on units the head never saw", "rul.png", _rul_png(evaluation.rul)))
    for _, file, png in figures:
        (out_dir / file).write_bytes(png)
    page = out_dir / "report.html"
    page.write_text(_html(bundle, evaluation, figures))
    return page


def _histogram_png(name: str, h: ErrorHistogram) -> bytes:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=100)
    widths = [b - a for a, b in zip(h.edges[:-1], h.edges[1:], strict=True)]
    ax.bar(h.edges[:-1], h.normal, width=widths, align="edge", alpha=0.6, label=f"normal ({sum(h.normal)})",
           color="#2b7bba")
    ax.bar(h.edges[:-1], h.fault, width=widths, align="edge", alpha=0.6, label=f"fault ({sum(h.fault)})",
           color="#d9534f")
    ax.axvline(h.threshold, color="black", linestyle="--", label=f"threshold {h.threshold:.4g}")
    ax.set_xscale("log")
    ax.set_xlabel("mean squared reconstruction error")
    ax.set_ylabel("held-out rows")
    ax.set_title(name)
    ax.legend()
    return _png(fig)


def _rul_png(p: RulPairs) -> bytes:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    ax.scatter(p.truth, p.predicted, s=6, alpha=0.4, color="#2b7bba")
    top = max(max(p.truth), max(p.predicted))
    ax.plot([0, top], [0, top], color="black", linestyle="--", label="perfect")
    ax.set_xlabel(f"true RUL ({p.unit})")
    ax.set_ylabel(f"predicted RUL ({p.unit})")
    ax.legend()
    return _png(fig)


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _rows(items: dict[str, Any]) -> str:
    out = []
    for k, v in items.items():
        text = ", ".join(f"{a}: {b}" for a, b in v.items()) if isinstance(v, dict) else str(v)
        out.append(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(text)}</td></tr>")
    return "\n".join(out)


def _html(bundle: Bundle, evaluation: EvaluationFile | None, figures: list[tuple[str, str, bytes]]) -> str:
    m = bundle.manifest
    prov = m.provenance
    ident = {"equipment": m.equipment_id, "power class": m.power, "version": m.model_version,
             "power range (kW)": f"[{m.power_range_kw[0]:g}, {m.power_range_kw[1]:g})",
             "gates": ", ".join(f"{n} ({mod.model.kind}: {', '.join(mod.features)}; threshold {mod.threshold:.4g})"
                                for n, mod in m.modalities.items()) or "none (classifier-only)",
             "classifier": (f"{m.classifier.mode} XGBoost over {', '.join(m.classifier.features)}; classes "
                            f"{', '.join(m.classifier.classes)}" if m.classifier else "none"),
             "cascade": m.cascade,
             "RUL head": (f"{m.rul.kind} over {', '.join(m.rul.features)}; cap {m.rul.cap}, {m.rul.unit}; "
                          f"alert below {m.rul.alert_below}" if m.rul else "none"),
             "derived features": ", ".join(f"{d.name} = {d.op}({', '.join(d.inputs)})" for d in m.derived) or "none"}
    provenance = {"data": prov.data, "data sha256": prov.data_sha256 or "-", "seed": prov.seed,
                  "trained at": prov.trained_at, "builder": prov.builder, "manifest sha256": bundle.digest}
    body = [f"<h1>{html.escape('/'.join(bundle.key))}</h1>", "<h2>Bundle</h2>", f"<table>{_rows(ident)}</table>",
            "<h2>Provenance</h2>", f"<table>{_rows(provenance)}</table>",
            "<h2>Held-out figures (as the builder measured them)</h2>", f"<table>{_rows(prov.metrics)}</table>"]
    if evaluation is None:
        body.append("<p>This bundle records no held-out errors (it has no evaluation.json), so there are no "
                    "figures to draw; <code>serve-ml bundle evaluate</code> measures it on a file.</p>")
    else:
        body.append(f"<p>Split: {html.escape(evaluation.split)}.</p>")
    for title, file, png in figures:
        data = base64.b64encode(png).decode()
        body += [f"<h2>{html.escape(title)}</h2>",
                 f'<img alt="{html.escape(title)}" data-file="{file}" src="data:image/png;base64,{data}">']
    style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}"
             "table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left;"
             "vertical-align:top}th{background:#f4f4f4}img{max-width:100%}")
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>serve-ml bundle {html.escape('/'.join(bundle.key))}</title><style>{style}</style></head>"
            f"<body>\n{chr(10).join(body)}\n</body></html>\n")

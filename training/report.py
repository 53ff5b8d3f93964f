"""The table's summary and Markdown: mean ± std per row, the paper's value beside it."""

import os
import platform
from pathlib import Path

import numpy as np

from training.paper import PAPER
from training.variants import VARIANTS

METRICS = ("clustering_accuracy", "nmi", "classification_accuracy")
#: What the quantizer rows add (metrics.json keys), summarized the same way.
CODE_METRICS = ("bits_per_image", "codebook_usage", "perplexity", "reconstruction_error")


def summarize(dataset, per_row, codebook_rows=()):
    """Mean ± std per row and metric, the paper's value beside it.

    `CODE_METRICS` are summarized where every run recorded them; rows in
    `codebook_rows` always get `codebook_usage` and `perplexity`, with
    `recorded` (how many runs had them: ledger entries older than these
    metrics lack them), the mean ± std over those runs when any.
    """
    rows = []
    for name, runs in per_row.items():
        paper = PAPER.get(dataset, {}).get(name, (None, None, None))
        row = {"name": name, "seeds": len(runs)}
        for metric, paper_value in zip(METRICS, paper):
            values = np.array([r[metric] for r in runs], dtype=np.float64)
            row[metric] = {
                "mean": float(values.mean()),
                "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                "values": values.tolist(),
                "paper": paper_value,
            }
        for metric in CODE_METRICS:
            values = [r[metric] for r in runs if metric in r]
            if len(values) == len(runs):
                values = np.array(values, dtype=np.float64)
                row[metric] = {
                    "mean": float(values.mean()),
                    "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                    "values": values.tolist(),
                }
        row["wall_time_s"] = float(np.mean([r["timings_s"]["total"] for r in runs]))
        if name in codebook_rows:
            for metric in ("codebook_usage", "perplexity"):
                values = np.array([r[metric] for r in runs if metric in r], dtype=np.float64)
                row[metric] = {"recorded": int(len(values))}
                if len(values):
                    row[metric].update({
                        "mean": float(values.mean()),
                        "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                        "values": values.tolist(),
                    })
        rows.append(row)
    return rows


def machine():
    import keras

    gpu = bool(os.environ.get("CUDA_VISIBLE_DEVICES")) or Path("/dev/nvidia0").exists()
    return {
        "backend": keras.backend.backend(),
        "device": "GPU" if gpu else "CPU",
        "cpu_cores": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "keras": keras.__version__,
    }


def _cell(entry, scale, digits):
    text = f"{entry['mean'] * scale:.{digits}f}"
    if entry.get("std"):
        text += f" ± {entry['std'] * scale:.{digits}f}"
    return text


def _paper(entry, scale, digits):
    return "–" if entry["paper"] is None else f"{entry['paper'] * scale:.{digits}f}"


def _codebook(row, metric, scale, digits):
    """A codebook statistic's cell: "not recorded" when no run recorded it,
    "(n of m seeds)" when only some did."""
    entry = row[metric]
    if not entry.get("recorded", row["seeds"]):
        return "not recorded"
    text = _cell(entry, scale, digits)
    if entry.get("recorded", row["seeds"]) < row["seeds"]:
        text += f" ({entry['recorded']} of {row['seeds']} seeds)"
    return text


def markdown(dataset, rows, info, seeds, wall_time, note=None):
    """The table as Markdown; `note` (`training.paper.data_note`) goes under the heading."""
    lines = [
        f"## {dataset}: {seeds} seed{'s' if seeds > 1 else ''}, "
        f"{info['backend']} on {info['device']} ({info['cpu_cores']} cores)",
        "",
    ]
    if note:
        lines += [f"*{note}*", ""]
    lines += [
        "| model | clustering % | paper | NMI | paper | classification % | paper | wall time / run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        c, n, a = (r[m] for m in METRICS)
        name = r["name"]
        if name == "raw":
            name += " (once: depends only on the data)"
        elif r["seeds"] != seeds:
            name += f" ({r['seeds']} seed{'s' if r['seeds'] > 1 else ''})"
        lines.append(
            f"| {name} | {_cell(c, 100, 2)} | {_paper(c, 100, 2)} "
            f"| {_cell(n, 1, 4)} | {_paper(n, 1, 4)} "
            f"| {_cell(a, 100, 2)} | {_paper(a, 100, 2)} | {r['wall_time_s'] / 60:.1f} min |"
        )
    coded = [r for r in rows if "codebook_usage" in r]
    if coded:
        lines += ["", "Codes (test split; rvq: per stage, averaged over its stages):", "",
                  "| model | bits / image | codebook usage % | perplexity | reconstruction error |",
                  "|---|---|---|---|---|"]
        for r in coded:
            bits = f"{r['bits_per_image']['mean']:g}" if "bits_per_image" in r else "–"
            recon = (_cell(r["reconstruction_error"], 1, 5)
                     if "reconstruction_error" in r else "–")
            lines.append(f"| {r['name']} | {bits} | {_codebook(r, 'codebook_usage', 100, 1)} "
                         f"| {_codebook(r, 'perplexity', 1, 1)} | {recon} |")
    extra = [r for r in rows if r["name"] in VARIANTS]
    if extra:
        lines += ["", "Rows below the paper's are not in the paper (each changes one "
                  "training option of a paper row):", ""]
        lines += [f"- **{r['name']}** ({r['seeds']} seed{'s' if r['seeds'] > 1 else ''}): "
                  f"{VARIANTS[r['name']][2]}." for r in extra]
    lines += ["", f"Whole table: {wall_time / 60:.1f} min of wall time "
              f"(runs reused from earlier invocations count their own time)."]
    return "\n".join(lines) + "\n"

"""Where `training.table`'s runs live and the ledger that records them.

Each run of a table lives in `<out>/runs/<dataset>-<row>-seed<k>/`; every
finished run's metrics are also written to the ledger,
`<out>/<dataset>-runs/<row>-seed<k>.json`: small JSON files meant to be
committed with the table, so that a table spanning several machines or
sessions trains each run once.
"""

from pathlib import Path

from training import artifacts
from training.settings import run_name


def run_folder(out, dataset, model, seed):
    """The folder of one run of the table (`model`: a row, a model or a VARIANTS name)."""
    return Path(out) / "runs" / f"{run_name(dataset)}-{model}-seed{seed}"


def ledger_path(out, dataset, row, seed, args):
    """The committed record of one finished run's metrics.

    Runs of the paper's protocol go to `<out>/<name>-runs/`; a quick table
    (`--epochs`, `--kmeans-init` or `--probe-epochs` changed) keeps its own
    folder named after those settings, so that it neither reuses nor replaces
    the paper's entries.
    """
    changed = [f"{flag}{value}" for flag, value, paper in (
        ("epochs", args.epochs, None), ("kmeans", args.kmeans_init, 100),
        ("probe", args.probe_epochs, 20)) if value != paper]
    folder = "-".join([f"{run_name(dataset)}-runs", *changed])
    return Path(out) / folder / f"{row}-seed{seed}.json"


def record(path, metrics, source):
    """Write `metrics` (a finished run's) to the ledger entry `path`, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    artifacts.write_json(path, {**metrics, "recorded_from": source})


def finished(folder):
    """Whether the run in `folder` ended: it has metrics.json and no checkpoint left."""
    return (folder / artifacts.METRICS).is_file() and not (folder / artifacts.CHECKPOINT).exists()


def ledger_seeds(out, dataset, row, args):
    """`{seed: metrics}` of every ledger entry of `row` (a model or a VARIANTS name)."""
    folder = ledger_path(out, dataset, row, 0, args).parent
    found = {}
    for path in folder.glob(f"{row}-seed*.json"):
        tail = path.stem[len(row) + len("-seed"):]
        if tail.isdigit():
            found[int(tail)] = path
    return {seed: artifacts.read_json(found[seed]) for seed in sorted(found)}

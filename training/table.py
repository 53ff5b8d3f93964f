"""`python -m training.table DATASET`: the paper's Table 1 / 2 rows, N seeds each.

Trains every row (ae, vae, betavae, infodropout, vq, softvq; the modern
quantizers fsq, lfq, rvq with `--models`) with the paper's settings through
`training.fit.run`, N seeds each, adds the raw-pixel row, and
writes `<out>/<dataset>.json` and `<out>/<dataset>.md` (mean ± std of clustering
accuracy, NMI and classification accuracy, the paper's number beside each, wall
time per row, backend and machine) plus pictures next to them:
`<dataset>-reconstructions.png`, `<dataset>-latents.png`,
`<dataset>-codebook.png` (soft VQ) and `<dataset>-metrics.png`.

`--extra NAME ...` adds rows beyond the paper's (`VARIANTS`: one paper model
with one changed training option, e.g. `softvq+kmeans-init`), each trained for
`--extra-seeds` seeds (default `--seeds`) and printed after the paper's rows.

`--report-only` trains nothing and writes the table from the finished runs (a
row with fewer seeds than asked for says how many it has).

Each run lives in `<out>/runs/<dataset>-<row>-seed<k>/`. A finished run
(it has `metrics.json`) is reused, an interrupted one (it has `checkpoint/`) is
resumed, so an interrupted table picks up where it stopped. Every finished
run's metrics are also recorded in the ledger, `<out>/<dataset>-runs/<row>-seed<k>.json`
(small JSON files meant to be committed with the table; a table with a changed
`--epochs`, `--kmeans-init` or `--probe-epochs` keeps a folder of its own, named
after them), and a run whose folder is gone (another machine) is reused from its
ledger entry: a table spanning
several machines or sessions trains each run once. The raw-pixel row depends
only on the data: it is computed once (seed 0; `training.raw_row` caches it per
dataset fingerprint for every run and table) and recorded there too
(`raw-seed0.json`).

`--models a b` (or `--extra c`) trains and updates only those rows: every other
row with ledger entries is merged back from the ledger, so a partial rerun never
drops rows. Codebook usage and perplexity (the rows with codes: vq, soft VQ,
fsq, lfq, rvq) come from the ledger; an entry recorded before they were is
completed from its saved run when the run folder is here, else the table says
"not recorded". Run folders and the ledger: `training.ledger`; the pictures:
`training.table_pictures`.

DATASET takes every form `python -m training.fit` takes (a built-in name, a
folder of images with class sub-folders, an `.npz` file with labels,
`tfds:NAME`); files are named after it (`training.settings.run_name`), and a
user's dataset has no paper column. The raw-pixel row of a streamed dataset is
computed on a bounded sample (`training.data.RAW_SAMPLE` images per split).

    python -m training.table mnist --seeds 3 --data-dir DATA_FOLDER
    python -m training.table mnist --seeds 3 --extra softvq+kmeans-init --extra-seeds 1
    python -m training.table mnist --seeds 3 --models fsq lfq rvq --extra vq+rotation
    python -m training.table my_photos/ --seeds 1 --image-size 32x32
"""

import argparse
import os
import sys
import time
from pathlib import Path

from training import artifacts
from training.fit import MODELS as ROWS  # the paper's row order, then fsq, lfq, rvq
from training.ledger import finished, ledger_path, ledger_seeds, record, run_folder
from training.paper import data_note
from training.report import machine, markdown, summarize
from training.settings import run_name
from training.table_pictures import pictured_runs, pictures
from training.variants import VARIANTS

#: The rows trained by default: the paper's (fsq, lfq and rvq with --models).
PAPER_ROWS = ROWS[:6]


def data_options(args):
    """The `training.fit.run` data options of the table's command line."""
    return dict(image_size=args.image_size, channels=args.channels,
                architecture=args.architecture, test_fraction=args.test_fraction,
                skip_bad_images=args.skip_bad_images)


def train_row(dataset, row, seed, args, pixel_variance=None, info=None):
    """Train (or reuse / resume) the run of `row` (a model or a VARIANTS name);
    return its metrics."""
    from training.fit import run

    folder = run_folder(args.out, dataset, row, seed)
    ledger = ledger_path(args.out, dataset, row, seed, args)
    if finished(folder):
        print(f"[table] reusing {folder}", flush=True)
        metrics = artifacts.read_json(folder / artifacts.METRICS)
        if not ledger.is_file():
            record(ledger, metrics, folder.name)
        return metrics
    if ledger.is_file() and not (folder / artifacts.CHECKPOINT).is_dir():
        print(f"[table] reusing {ledger} (the run's recorded metrics; its folder is "
              "not on this machine)", flush=True)
        return artifacts.read_json(ledger)
    if args.report_only:
        print(f"[table] leaving out {folder} (not finished; --report-only)", flush=True)
        return None
    resume = (folder / artifacts.CHECKPOINT).is_dir()
    print(f"[table] {'resuming' if resume else 'training'} {folder}", flush=True)
    options = dict(
        seed=seed, out=str(folder), data_dir=args.data_dir, resume=resume,
        overwrite=not resume, kmeans_init=args.kmeans_init,
        probe_epochs=args.probe_epochs, raw_baseline=False, verbose=2, **data_options(args),
    )
    if args.epochs:
        options["epochs"] = args.epochs
    model = row
    if row in VARIANTS:
        model, extra, _ = VARIANTS[row]
        options.update(extra(info, pixel_variance) if callable(extra) else extra)
    run(dataset, model, **options)
    metrics = artifacts.read_json(folder / artifacts.METRICS)
    record(ledger, metrics, folder.name)
    return metrics


def raw_row(dataset, data, args):
    """The raw-pixel scores (`data`: a `training.data.RunData`): they depend only on
    the data, so they are computed once (seed 0, `training.raw_row`, cached per
    dataset fingerprint) and recorded in the ledger as `raw-seed0.json`."""
    from training.raw_row import RAW_SEED, raw_scores

    path = ledger_path(args.out, dataset, "raw", RAW_SEED, args)
    if path.is_file():
        return artifacts.read_json(path)
    if args.report_only:
        print("[table] leaving out the raw-pixel row (not computed; --report-only)", flush=True)
        return None
    scores = raw_scores(data, kmeans_init=args.kmeans_init, probe_epochs=args.probe_epochs,
                        test_fraction=args.test_fraction, say=print)
    sample = scores.pop("sample")
    scores.pop("cached")
    if not sample["whole"]:
        scores["sample"] = {"train": sample["train"], "test": sample["test"]}
    record(path, scores, "raw pixels")
    return scores


def has_codebook(row):
    """Whether `row`'s bottleneck has a codebook (usage and perplexity apply)."""
    model = VARIANTS[row][0] if row in VARIANTS else row
    return model in ("vq", "softvq", "fsq", "lfq", "rvq")


def add_codebook_statistics(dataset, row, seed, metrics, data, args):
    """Fill in codebook usage and perplexity that a ledger entry lacks (older
    entries did not record them) from the saved run, when its folder is here;
    the ledger entry is rewritten with them. Returns `metrics`."""
    if not has_codebook(row) or "codebook_usage" in metrics:
        return metrics
    folder = run_folder(args.out, dataset, row, seed)
    if not finished(folder) or not (folder / artifacts.AUTOENCODER).is_file():
        return metrics
    import keras

    from softvq_keras import Autoencoder  # noqa: F401  imports (registers) the custom layers
    from training.evaluate import autoencoder_statistics

    print(f"[table] recomputing codebook usage and perplexity of {folder}", flush=True)
    autoencoder = keras.saving.load_model(folder / artifacts.AUTOENCODER)
    stats = autoencoder_statistics(autoencoder, data, "test")
    metrics = {**metrics, **{k: stats[k] for k in ("codebook_usage", "perplexity") if k in stats}}
    ledger = ledger_path(args.out, dataset, row, seed, args)
    record(ledger, {k: v for k, v in metrics.items() if k != "recorded_from"},
           metrics.get("recorded_from", folder.name))
    return metrics


def build_parser():
    from training.fit import load_presets

    datasets = sorted(load_presets().DATASETS)
    p = argparse.ArgumentParser(
        prog="python -m training.table",
        description="Train every row of the paper's table for DATASET and write the results.",
    )
    p.add_argument(
        "dataset", metavar="DATASET",
        help=f"a built-in name ({', '.join(datasets)}), a folder of images with class "
        "sub-folders, an .npz file with labels, or tfds:NAME (as for training.fit)",
    )
    p.add_argument("--seeds", type=int, default=3, help="seeds per row (default 3)")
    p.add_argument("--models", nargs="+", choices=ROWS, default=list(PAPER_ROWS),
                   help="rows to train (default: the paper's six, "
                   f"{', '.join(PAPER_ROWS)}; also {', '.join(ROWS[6:])})")
    p.add_argument("--extra", nargs="+", choices=list(VARIANTS), default=[],
                   metavar="ROW",
                   help="extra rows after the paper's: " + "; ".join(
                       f"{name}: {text}" for name, (_, _, text) in VARIANTS.items()))
    p.add_argument("--extra-seeds", type=int,
                   help="seeds of the --extra rows (default: --seeds)")
    p.add_argument("--data-dir", help="folder with <dataset>.npz (default $SOFTVQ_DATA_DIR)")
    p.add_argument("--out", default="results", help="results folder (default results/)")
    p.add_argument("--epochs", type=int,
                   help="override the paper's training length (for quick tables)")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: write the table from the runs already finished "
                   "(a row with fewer seeds says how many it has)")
    p.add_argument("--kmeans-init", type=int, default=100)
    p.add_argument("--probe-epochs", type=int, default=20)
    own = p.add_argument_group("your own images (as for training.fit)")
    own.add_argument("--image-size", metavar="HxW")
    own.add_argument("--channels", type=int, choices=(1, 3))
    own.add_argument("--architecture", choices=("mlp", "cnn"))
    own.add_argument("--test-fraction", type=float, default=0.2)
    own.add_argument("--skip-bad-images", action="store_true")
    return p


def _open(args, seed=0):
    """`(RunData, None)` of the table's dataset, or `(None, one-line error)`."""
    from training.data import open_data, source_options
    from training.fit import FitSettings, UsageError

    settings = FitSettings(args.dataset, "ae", seed=seed, **data_options(args))
    try:
        data = open_data(args.dataset, args.data_dir, **source_options(settings))
    except UsageError as e:
        return None, str(e)
    if not data.labelled:
        return None, (f"{args.dataset} has no labels: the table's rows are accuracies; "
                      "train it with python -m training.fit (unsupervised metrics) instead")
    return data, None


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.extra_seeds is None:
        args.extra_seeds = args.seeds
    for flag, value in (("--seeds", args.seeds), ("--extra-seeds", args.extra_seeds)):
        if value < 1:
            print(f"python -m training.table: error: {flag} must be >= 1", file=sys.stderr)
            return 2
    if args.data_dir and not Path(args.data_dir).is_dir():
        print(f"python -m training.table: error: --data-dir {args.data_dir!r} does not exist",
              file=sys.stderr)
        return 2
    from training.fit import UsageError

    started = time.perf_counter()
    # Rows print in the paper's order, whatever order they are trained in.
    from training.data import data_kind
    from training.fit import FitSettings, choose_backend, load_presets

    try:
        kind = data_kind(args.dataset)
    except UsageError as e:
        print(f"python -m training.table: error: {e}", file=sys.stderr)
        return 2
    settings = FitSettings(args.dataset, "ae", **data_options(args))
    # One backend for every row, chosen as training.fit would before Keras loads
    # (TensorFlow, which tfds: and tf.data import, fixes it).
    if kind in ("builtin", "tfds"):
        choose_backend(settings, load_presets(),
                       None if kind == "builtin" else args.architecture or "cnn")
    data, error = _open(args)
    if error:
        print(f"python -m training.table: error: {error}", file=sys.stderr)
        return 2
    if kind not in ("builtin", "tfds"):
        choose_backend(settings, load_presets(), data.info.architecture)
    paper_key = args.dataset if kind == "builtin" else None
    per_row = {"raw": [], **{m: [] for m in ROWS if m in args.models}}
    per_row.update({name: [] for name in args.extra})
    plan = [(seed, model) for seed in range(args.seeds) for model in args.models]
    plan += [(seed, name) for seed in range(args.extra_seeds) for name in args.extra]
    try:
        for seed, row in plan:
            metrics = train_row(
                args.dataset, row, seed, args,
                pixel_variance=data.pixel_variance if row in VARIANTS else None,
                info=data.info,
            )
            if metrics is not None:
                per_row[row].append(add_codebook_statistics(
                    args.dataset, row, seed, metrics, data, args))
    except UsageError as e:
        print(f"python -m training.table: error: {e}", file=sys.stderr)
        return 2
    # Rows not asked for this time are merged from the ledger: a partial rerun
    # (--models a b) never drops the others.
    merged = {}
    for row in [m for m in ROWS if m not in args.models] + [
            v for v in VARIANTS if v not in args.extra]:
        entries = ledger_seeds(args.out, args.dataset, row, args)
        if entries:
            merged[row] = [add_codebook_statistics(args.dataset, row, seed, m, data, args)
                           for seed, m in entries.items()]
            print(f"[table] {row}: {len(entries)} seed(s) from the ledger (not asked for "
                  "this time; kept)", flush=True)
    order = ["raw", *ROWS, *args.extra, *[v for v in VARIANTS if v not in args.extra]]
    per_row = {name: per_row.get(name) or merged.get(name, []) for name in order}
    raw = raw_row(args.dataset, data, args)
    per_row["raw"] = [raw] if raw is not None else []
    rows = summarize(paper_key, {name: runs for name, runs in per_row.items() if runs},
                     codebook_rows={name for name in per_row if has_codebook(name)})
    info = machine()
    wall = time.perf_counter() - started
    pictured = pictured_runs(args)
    pngs = pictures(args.dataset, pictured, data, args)
    name = run_name(args.dataset)
    rows_png = Path(args.out) / f"{name}-metrics.png"
    from training import plots

    pngs.append(plots.metric_bars(rows, rows_png))
    note = data_note(data.info.source)
    result = {
        "dataset": args.dataset, "seeds": args.seeds, "machine": info,
        "data_note": note,
        "rows": rows, "wall_time_s": wall, "pictures": [p.name for p in pngs],
        "pictured_runs": pictured,
        "command": "python -m training.table "
        + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    out = Path(args.out)
    artifacts.write_json(out / f"{name}.json", result)
    text = markdown(args.dataset, rows, info, args.seeds, wall, note=note)
    tmp = out / f".{name}.md.tmp"
    tmp.write_text(text)
    os.replace(tmp, out / f"{name}.md")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

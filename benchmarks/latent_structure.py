"""How a run's test latents and codes sit against the classes: why one bottleneck clusters better.

For each run folder it loads the saved autoencoder, encodes the test split and prints:

- `silhouette`: the silhouette of the latents with the true classes as clusters
  (scikit-learn, Euclidean, 5,000 test images; -1 to 1, higher = classes are
  compact and apart; invariant to the latents' scale);
- `between/within`: the trace of the between-class scatter over the trace of the
  within-class scatter (Fisher's ratio; scale-invariant too);
- for a quantizer, from its `"indices"` (a residual VQ's first stage, and the
  tuple of all its stages): the codes the test set picks, the median number of
  distinct codes per class, and the purity of the codes (the share of test
  images whose code's majority class is their own class);
- `class/K-means inertia`: the K-means objective of the class partition (its
  within-class scatter) over that of the best K-means partition (`fit_kmeans`,
  10 restarts): near 1, K-means' objective favours the classes; well above 1,
  K-means finds a partition it likes better than the classes (and clusters
  them less well);
- the run's clustering accuracy and NMI (K-means ×100, from metrics.json).

    python benchmarks/latent_structure.py results/runs/mnist-fsq-seed2 results/runs/mnist-rvq-seed2
"""

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np


def scatter(z, y):
    """`(between, within)`: traces of the between- and within-class scatter."""
    mean = z.mean(axis=0)
    between = within = 0.0
    for label in np.unique(y):
        members = z[y == label]
        centre = members.mean(axis=0)
        between += len(members) * float(np.sum((centre - mean) ** 2))
        within += float(np.sum((members - centre) ** 2))
    return between, within


def code_figures(codes, y):
    """`(codes used, median distinct codes per class, purity)` of integer codes."""
    _, codes = np.unique(codes, axis=0, return_inverse=True)
    codes = codes.reshape(-1)
    per_class = [len(np.unique(codes[y == label])) for label in np.unique(y)]
    table = np.zeros((codes.max() + 1, y.max() + 1), dtype=np.int64)
    np.add.at(table, (codes, y), 1)
    purity = table.max(axis=1).sum() / len(y)
    return int((table.sum(axis=1) > 0).sum()), float(np.median(per_class)), float(purity)


def describe(folder, data_dir, sample=5000):
    import keras
    from sklearn.metrics import silhouette_score

    from softvq_keras import Autoencoder  # noqa: F401  registers the custom layers
    from softvq_keras.data import load
    from softvq_keras.evaluation import fit_kmeans

    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    metrics = json.loads((folder / "metrics.json").read_text())
    data = load(config["dataset"], data_dir)
    autoencoder = keras.saving.load_model(folder / "autoencoder.keras")
    outputs = autoencoder.predict(data.x_test, batch_size=2048, verbose=0)
    z = np.asarray(outputs["latent"], dtype=np.float64)
    y = np.asarray(data.y_test).reshape(-1)
    rng = np.random.default_rng(0)
    pick = rng.choice(len(z), size=min(sample, len(z)), replace=False)
    between, within = scatter(z, y)
    kmeans = fit_kmeans(z, len(np.unique(y)), n_init=10, seed=0)
    line = (f"{folder.name:36s} silhouette {silhouette_score(z[pick], y[pick]):+.3f}  "
            f"between/within {between / within:.3f}  "
            f"class/K-means inertia {within / kmeans.inertia_:.3f}  "
            f"clustering {metrics['clustering_accuracy']:.4f}  NMI {metrics['nmi']:.3f}")
    if "indices" in outputs:
        indices = np.asarray(outputs["indices"]).astype(np.int64)
        if indices.ndim == 1:
            indices = indices[:, None]
        stages = [("codes", indices[:, :1])]
        if indices.shape[1] > 1:
            stages.append(("code tuples", indices))
        for name, codes in stages:
            used, per_class, purity = code_figures(codes, y)
            line += (f"\n{'':36s} {name}: {used} used, {per_class:.0f} per class, "
                     f"purity {purity:.3f}")
    return line


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run folders (python -m training.fit --out)")
    parser.add_argument("--data-dir", default=os.environ.get("SOFTVQ_DATA_DIR"))
    args = parser.parse_args(argv)
    for folder in args.runs:
        if not (Path(folder) / "autoencoder.keras").is_file():
            print(f"{folder}: no autoencoder.keras (not a finished run folder)", file=sys.stderr)
            return 2
    for folder in args.runs:
        try:
            print(describe(folder, args.data_dir), flush=True)
        except (ValueError, OSError, RuntimeError) as e:  # a user's dataset, no data offline
            print(f"{folder}: cannot describe this run (built-in datasets only: mnist, "
                  f"svhn, cifar10, digits): {str(e).splitlines()[0]}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

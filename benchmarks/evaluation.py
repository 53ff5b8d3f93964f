"""Time the evaluation protocol side by side: scikit-learn's K-means, `fit_kmeans`, the probe.

On real-data latents of the sizes a run evaluates: MNIST 60,000 x 64 (the
training split) and CIFAR-10 10,000 x 128 (the test split), PCA projections of
the pixels (the right sizes and a realistic cluster structure), or a run's own
latents (`--run-dir`: its test latents, or with `--split train` the training
latents the service's centroids are fitted on). Data come from `--data-dir`
(default $SOFTVQ_DATA_DIR); without it, scikit-learn's bundled digits stand in.

For each input it prints, in one run, the seconds of scikit-learn's default
KMeans (float64 Lloyd) on one thread and on all threads, of its Elkan variant on
float32 (what fit_kmeans ran before; one thread), of
`softvq_keras.evaluation.fit_kmeans` (numba, backend-independent) on one
thread and on all threads (as training runs it), the ratio of scikit-learn's
best to fit_kmeans' best, and the inertia ratio; then the softmax probe's
seconds. `--repeats` repeats the whole
comparison (the machine may be shared: compare ratios measured together).

    python benchmarks/evaluation.py --n-init 100 --repeats 2
"""

import argparse
import functools
import os
import time

import numpy as np


def pca_latents(x, dim, fit_rows=10000):
    from sklearn.decomposition import PCA

    x = x.reshape(len(x), -1).astype(np.float32) / 255.0
    return PCA(dim, random_state=0).fit(x[:fit_rows]).transform(x)


def inputs(data_dir, run_dir=None, split="test"):
    """`[(name, latents, labels)]` to time."""
    if run_dir:
        import json
        from pathlib import Path

        import keras

        from softvq_keras.data import load

        config = json.loads((Path(run_dir) / "config.json").read_text())
        data = load(config["dataset"], data_dir)
        encoder = keras.saving.load_model(Path(run_dir) / "encoder.keras")
        x, y = (data.x_train, data.y_train) if split == "train" else (data.x_test, data.y_test)
        z = encoder.predict(x, batch_size=2048, verbose=0)
        return [(f"{config['dataset']} {split} latents of {run_dir}", z, y)]
    found = []
    for name, split, dim in (("mnist", "train", 64), ("cifar10", "test", 128)):
        path = os.path.join(data_dir or "", f"{name}.npz")
        if data_dir and os.path.isfile(path):
            with np.load(path) as d:
                x, y = d[f"x_{split}"], d[f"y_{split}"].reshape(-1)
            found.append((f"{name} {split} PCA-{dim}", pca_latents(x, dim), y))
    if not found:
        from sklearn.datasets import load_digits

        x, y = load_digits(return_X_y=True)
        found.append(("digits PCA-32 (no --data-dir)", pca_latents(x * 255 / 16, 32), y))
    return found


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def compare(name, z, y, n_init, threads):
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    from softvq_keras.evaluation import cluster_accuracy, fit_kmeans

    print(f"\n{name}: {z.shape[0]:,} x {z.shape[1]}, K-means x{n_init}", flush=True)
    rows = {}
    for label, fn, settings in (
        ("scikit-learn KMeans (float64 Lloyd)", lambda t: KMeans(
            10, n_init=n_init, random_state=0).fit(np.asarray(z, np.float64)), (1, threads)),
        ("scikit-learn KMeans (float32 Elkan)", lambda t: KMeans(
            10, n_init=n_init, random_state=0, algorithm="elkan").fit(
                np.asarray(z, np.float32)), (1,)),
        ("fit_kmeans", lambda t: fit_kmeans(z, 10, n_init=n_init, seed=0, n_threads=t),
         (1, threads)),
    ):
        for t in settings:
            with threadpool_limits(limits=t):
                seconds, km = timed(functools.partial(fn, t))
            rows[(label, t)] = (seconds, km)
            print(f"  {label:38s} {t} thread{'s' if t > 1 else ' '}: {seconds:7.2f} s  "
                  f"inertia {km.inertia_:.7g}  accuracy {cluster_accuracy(y, km.labels_):.4f}",
                  flush=True)
    ref = min((v for k, v in rows.items() if k[0].startswith("scikit-learn KMeans (float64")),
              key=lambda v: v[0])
    new = min((v for k, v in rows.items() if k[0] == "fit_kmeans"), key=lambda v: v[0])
    print(f"  => fit_kmeans {ref[0] / new[0]:.2f}x faster than scikit-learn's best thread "
          f"setting; inertia ratio {new[1].inertia_ / ref[1].inertia_:.6f}", flush=True)
    return ref[0] / new[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", help="time a run's own latents instead of PCA projections")
    parser.add_argument("--split", choices=("test", "train"), default="test",
                        help="which latents of --run-dir (default test)")
    parser.add_argument("--data-dir", default=os.environ.get("SOFTVQ_DATA_DIR"))
    parser.add_argument("--n-init", type=int, default=100)
    parser.add_argument("--probe-epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--no-probe", action="store_true")
    args = parser.parse_args()

    threads = os.cpu_count() or 1
    print(f"cpus {threads}, load average {os.getloadavg()[0]:.1f}")
    data = inputs(args.data_dir, args.run_dir, args.split)
    from softvq_keras.evaluation import fit_kmeans

    seconds, _ = timed(lambda: fit_kmeans(data[0][1][:200], 10, n_init=2))
    print(f"fit_kmeans' first call (numba compiles, or loads its disk cache): {seconds:.1f} s; "
          "not counted below")
    for repeat in range(args.repeats):
        print(f"\n=== repeat {repeat + 1} of {args.repeats}")
        for name, z, y in data:
            compare(name, z, y, args.n_init, threads)
    if args.no_probe:
        return
    from softvq_keras.evaluation import linear_probe

    name, z, y = data[0]
    split = int(0.8 * len(z))
    seconds, (_, accuracy) = timed(lambda: linear_probe(
        z[:split], y[:split], z[split:], y[split:], epochs=args.probe_epochs))
    print(f"\nsoftmax probe on {name} ({split:,} training rows), {args.probe_epochs} epochs: "
          f"{seconds:.2f} s (held-out accuracy {accuracy:.4f})")


if __name__ == "__main__":
    main()

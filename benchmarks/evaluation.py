"""Time the evaluation protocol: K-means x100 + the softmax probe on MNIST-sized latents.

Issue 5's target: <= 15 s on 2 cores for the 10,000 x 64 MNIST test latents.

Latents come from a run folder's `encoder.keras` (`--run-dir`), else from a
64-component PCA of the real MNIST pixels (`--data-dir`, default ../shared/data),
which has the right size and a realistic cluster structure.

    python benchmarks/evaluation.py [--run-dir runs/mnist-softvq] [--n-init 100]
"""

import argparse
import json
import os
import time
from pathlib import Path



def latents(args):
    from softvq_keras.data import load

    if args.run_dir:
        import keras

        config = json.loads((Path(args.run_dir) / "config.json").read_text())
        data = load(config["dataset"], args.data_dir)
        encoder = keras.saving.load_model(Path(args.run_dir) / "encoder.keras")
        encode = lambda x: encoder.predict(x, batch_size=2048, verbose=0)  # noqa: E731
        return encode(data.x_train), data.y_train, encode(data.x_test), data.y_test
    from sklearn.decomposition import PCA

    data = load("mnist", args.data_dir)
    pca = PCA(64, random_state=0).fit(data.x_train[:10000])
    return (pca.transform(data.x_train), data.y_train,
            pca.transform(data.x_test), data.y_test)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir")
    parser.add_argument("--data-dir", default=os.environ.get(
        "SOFTVQ_DATA_DIR", str(Path(__file__).resolve().parents[1].parent / "shared" / "data")))
    parser.add_argument("--n-init", type=int, default=100)
    parser.add_argument("--probe-epochs", type=int, default=20)
    args = parser.parse_args()

    from softvq_keras.evaluation import clustering_scores, linear_probe

    z_train, y_train, z_test, y_test = latents(args)
    print(f"latents: train {z_train.shape}, test {z_test.shape}, cpus {os.cpu_count()}")
    t0 = time.perf_counter()
    scores = clustering_scores(z_test, y_test, n_init=args.n_init, seed=0)
    t1 = time.perf_counter()
    _, accuracy = linear_probe(z_train, y_train, z_test, y_test, epochs=args.probe_epochs)
    t2 = time.perf_counter()
    print(f"K-means x{args.n_init} on test latents: {t1 - t0:6.2f} s  "
          f"(accuracy {scores['clustering_accuracy']:.4f}, NMI {scores['nmi']:.4f})")
    print(f"softmax probe, {args.probe_epochs} epochs:      {t2 - t1:6.2f} s  "
          f"(test accuracy {accuracy:.4f})")
    total = t2 - t0
    print(f"total: {total:.2f} s (target <= 15 s): {'OK' if total <= 15 else 'OVER'}")


if __name__ == "__main__":
    main()

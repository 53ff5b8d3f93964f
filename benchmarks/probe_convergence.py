"""Has the linear probe converged? Its test accuracy against the number of updates.

The evaluation protocol trains the softmax probe (one Dense layer, Adam 0.01,
batch 128) for `--probe-epochs` 20 epochs: 9,380 updates on MNIST's 60,000
training latents, 7,820 on CIFAR-10's 50,000. The authors' SVHN notebook
trains the same probe for 30,000 updates. For each finished run folder this
script encodes both splits with the run's `encoder.keras`, trains one probe
(the run's seed) for as many epochs as 30,000 updates take, and prints its test
accuracy after 5, 10 and 20 epochs and at 30,000 updates, with the change from
20 epochs to 30,000 updates (the protocol's shortfall, if any).

    python benchmarks/probe_convergence.py RUN_DIR [RUN_DIR ...] [--data-dir D]
        [--updates 30000]
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BATCH_SIZE = 128


def probe_curve(z_train, y_train, z_test, y_test, epochs, seed):
    """Test accuracy after each epoch of one probe trained for `epochs` epochs."""
    import keras

    from softvq_keras import evaluation

    curve = {}

    class Score(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            probs = self.model.predict(z_test, batch_size=4096, verbose=0)
            curve[epoch + 1] = float(np.mean(np.argmax(probs, axis=-1) == y_test))

    evaluation.linear_probe(
        z_train, y_train, epochs=epochs, seed=seed, batch_size=BATCH_SIZE,
        num_classes=int(max(y_train.max(), y_test.max()) + 1), callbacks=[Score()],
    )
    return curve


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="finished run folders")
    parser.add_argument("--data-dir", help="where the dataset's local copy is")
    parser.add_argument("--updates", type=int, default=30000,
                        help="the long probe's Adam updates (the notebook's 30,000)")
    args = parser.parse_args(argv)

    import keras

    from softvq_keras import evaluation
    from training.data import open_run_data

    print(f"{'run':<40} {'updates/epoch':>13} {'5 ep':>7} {'10 ep':>7} {'20 ep':>7} "
          f"{'long':>16} {'long - 20 ep':>12}")
    for run in args.runs:
        config = json.loads((run / "config.json").read_text())
        data = open_run_data(config, args.data_dir)
        encoder = keras.saving.load_model(run / "encoder.keras", compile=False)
        z_train = np.asarray(data.predict(encoder, "train"), np.float32)
        z_test = np.asarray(data.predict(encoder, "test"), np.float32)
        y_train = np.asarray(data.labels("train"))
        y_test = np.asarray(data.labels("test"))
        # As linear_probe schedules it: a tiny training set (digits) is repeated
        # within each epoch, and by a factor that depends on the epoch count.
        repeats, per_epoch = evaluation.probe_schedule(len(z_train), 20, BATCH_SIZE)
        epochs = max(20, -(-args.updates // per_epoch))
        if evaluation.probe_schedule(len(z_train), epochs, BATCH_SIZE)[0] != repeats:
            print(f"{run.name}: {len(z_train):,} training latents are repeated {repeats}x "
                  "per epoch by the 20-epoch protocol but less by the long probe, so "
                  "its 20-epoch point is not the protocol's; skipped", flush=True)
            continue
        curve = probe_curve(z_train, y_train, z_test, y_test, epochs, int(config["seed"]))
        long_label = f"{curve[epochs]:.4f} @{epochs * per_epoch:,}"
        print(f"{run.name:<40} {per_epoch:>13} {curve[5]:>7.4f} {curve[10]:>7.4f} "
              f"{curve[20]:>7.4f} {long_label:>16} {100 * (curve[epochs] - curve[20]):>+11.2f}pt",
              flush=True)


if __name__ == "__main__":
    main()

"""Forward-pass latency of a run's `.keras` models and of its exports, side by side.

    .venv/bin/python benchmarks/export_latency.py RUN_DIR [--repeats 200]

RUN_DIR must have `export/` (`python -m training.export RUN_DIR`). Measures
the same forward pass, scaled images -> (latents, class probabilities), on the
same seeded inputs, for one image and for a batch of 256:

- `.keras` under each Keras backend in the service's compiled form
  (`serving.runtime.RunModel.predict`: a jitted `stateless_call` under JAX, a
  `tf.function` under TensorFlow, torch under `inference_mode`), one call for
  the whole batch: JAX (the service's default) in this process, interleaved
  with the runtimes below; TensorFlow and PyTorch each in a child process;
- `encoder.onnx` + `classifier.onnx` in onnxruntime (CPU provider, its default
  threads), `encoder.tflite` + `classifier.tflite` in LiteRT, and
  `encoder.xml` + `classifier.xml` in OpenVINO (CPU, f32), in this process.

Prints the median and the 10th-90th percentiles of each in milliseconds and
the ratio of each median to the fastest `.keras` backend's (below 1: faster
than Keras), and checks that every runtime's latents agree with the `.keras`
ones (max abs difference). Rounds of the runtimes are interleaved so that a
change in the machine's load hits all of them alike; on a shared machine,
compare the ratios of one run rather than absolute figures across runs.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

BACKENDS = ("jax", "tensorflow", "torch")
#: One image; the service's largest compiled batch (serving.runtime.DEFAULT_MAX_CHUNK); 256.
BATCHES = (1, 64, 256)
#: The backend timed in this process, interleaved with the runtimes (the service's default).
IN_PROCESS = "jax"


def inputs(config, n=256, seed=0):
    """`n` seeded images in the run's scaled input range."""
    raw = np.random.default_rng(seed).random((n,) + tuple(config["input_shape"]))
    return (raw + float(config["offset"])).astype(np.float32)


def timings(forward, x, repeats, rounds=5):
    """Per-call milliseconds of `forward(x)`: `repeats` calls in `rounds` rounds."""
    forward(x)
    forward(x)
    found = []
    for _ in range(rounds):
        for _ in range(max(1, repeats // rounds)):
            start = time.perf_counter()
            forward(x)
            found.append((time.perf_counter() - start) * 1e3)
    return found


def reps(n, repeats):
    """Calls timed for a batch of `n`: `repeats` for one image, fewer for batches."""
    return max(10, repeats // max(1, n // 16)) if n > 1 else repeats


def keras_forward(run_dir):
    """The service's forward pass under the current backend, as `f(x) -> (z, p)`."""
    from serving.runtime import RunModel

    return RunModel(run_dir, max_chunk=max(BATCHES)).predict


def keras_child(run_dir, repeats, out):
    """In a process of one backend: the service's forward pass, timed (JSON to `out`)."""
    forward = keras_forward(run_dir)
    x = inputs(json.loads((Path(run_dir) / "config.json").read_text()))
    found = {"latents": forward(x)[0].tolist()}
    for n in BATCHES:
        found[str(n)] = timings(forward, x[:n], reps(n, repeats))
    Path(out).write_text(json.dumps(found))


def runtime_forwards(export_dir, manifest):
    """{name: f(x) -> (latents, probabilities)} for the exported formats present."""
    from training.export_formats import runner

    found = {}
    for fmt, label in (("onnx", "onnxruntime"), ("litert", "LiteRT"), ("openvino", "OpenVINO")):
        entry = manifest["formats"].get(fmt)
        if entry is None or "classifier" not in entry.get("models", {}):
            continue
        try:
            encoder = runner(fmt, export_dir / entry["models"]["encoder"])
            classifier = runner(fmt, export_dir / entry["models"]["classifier"])
        except ImportError as e:
            print(f"skipped {label}: {e}")
            continue
        found[label] = (lambda e, c: lambda x: (lambda z: (z, c(z)))(e(x)))(encoder, classifier)
    return found


def percentiles(values):
    p10, p50, p90 = np.percentile(values, [10, 50, 90])
    return p50, p10, p90


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a run folder with export/ (python -m training.export)")
    parser.add_argument("--repeats", type=int, default=200, help="calls per figure, 1 image")
    parser.add_argument("--backends", default=",".join(BACKENDS),
                        help="Keras backends to time (comma-separated)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    if args.child:
        keras_child(run_dir, args.repeats, args.child)
        return 0
    export_dir = run_dir / "export"
    if not (export_dir / "manifest.json").is_file():
        print(f"error: {export_dir}/manifest.json is missing: run python -m training.export "
              f"{run_dir} first", file=sys.stderr)
        return 2
    manifest = json.loads((export_dir / "manifest.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    x = inputs(config)
    results, reference = {}, {}
    backends = [b for b in args.backends.split(",") if b]
    forwards = {}
    for backend in backends:  # the children first: no fork once JAX runs here
        if backend == IN_PROCESS:
            continue
        out = run_dir / f"export-latency-{backend}.json"
        env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(ROOT)}
        proc = subprocess.run([sys.executable, __file__, str(run_dir), "--repeats",
                               str(args.repeats), "--child", str(out)], env=env,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"skipped .keras under {backend}: {proc.stderr.strip().splitlines()[-1:]}")
            continue
        child = json.loads(out.read_text())
        out.unlink()
        reference[backend] = np.asarray(child.pop("latents"), np.float32)
        results[f".keras ({backend})"] = {int(n): v for n, v in child.items()}
    if IN_PROCESS in backends:
        os.environ["KERAS_BACKEND"] = IN_PROCESS
        forwards[f".keras ({IN_PROCESS})"] = keras_forward(run_dir)
        reference[IN_PROCESS] = forwards[f".keras ({IN_PROCESS})"](x)[0]
    forwards.update(runtime_forwards(export_dir, manifest))
    for name in forwards:
        results[name] = {n: [] for n in BATCHES}
    for _ in range(5):  # interleaved rounds
        for name, forward in forwards.items():
            for n in BATCHES:
                results[name][n] += timings(forward, x[:n], reps(n, args.repeats) // 5, rounds=1)
    base = reference.get(IN_PROCESS, next(iter(reference.values()), None))
    print(f"run {run_dir}: {config['dataset']} {config['model']}, input "
          f"{tuple(config['input_shape'])}, {os.cpu_count()} CPUs; forward pass = encoder + "
          "softmax head; ms per call, median [p10-p90]")
    if base is not None:
        for name, forward in forwards.items():
            if name.startswith(".keras"):
                continue
            diff = float(np.max(np.abs(forward(x)[0] - base)))
            print(f"  {name}: latents within {diff:.2g} of the .keras ones")
    for n in BATCHES:
        keras_medians = {k: percentiles(v[n])[0] for k, v in results.items()
                         if k.startswith(".keras")}
        fastest = min(keras_medians, key=keras_medians.get) if keras_medians else None
        print(f"\nbatch of {n}:" + (f" (ratio to {fastest})" if fastest else ""))
        for name, values in results.items():
            p50, p10, p90 = percentiles(values[n])
            ratio = f"  x{p50 / keras_medians[fastest]:.2f}" if fastest else ""
            print(f"  {name:<22} {p50:8.3f} ms  [{p10:.3f}-{p90:.3f}]{ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

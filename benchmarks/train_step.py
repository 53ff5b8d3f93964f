"""Train-step throughput of the paper's autoencoders per bottleneck and backend.

For each backend (each in its own child process with `KERAS_BACKEND` set) and
each bottleneck, builds the MNIST MLP (784-500-500-2000-[64]-2000-500-500-784,
the MNIST presets: softvq/vq K = 128) or, with `--architecture cnn`, the
CIFAR-10/SVHN CNN (Conv2D 64-128-256-512 stride 2, Conv2DTranspose back; the
CIFAR-10 presets), compiles it with Adam (lr 3e-4) and times `model.fit` on
random inputs of the dataset's shape at batch 64: one warm-up fit,
then `--repeats` timed fits of `--steps` steps each, the models interleaved
within every repeat so that load from other processes hits them alike. The
median is reported, with the ratio of each model's step time to `ae`'s
measured in the same process (the issues' targets: softvq <= 1.05x ae; fsq
and lfq <= 1.15x, rvq with the presets' 4 stages <= 1.3x), and
the ratio of the fastest runs (less disturbed by other processes on a shared
machine).

Achieved FLOP/s counts the multiply-adds of the Dense layers, the
convolutions (Conv2D: per output pixel; Conv2DTranspose: per input pixel, the
work a direct implementation does) and the codebook products (distances; soft
VQ also the posterior mean), forward + backward = 3x forward. It is compared
with a NumPy float32 1024x1024 matmul timed in the same child process.

    python benchmarks/train_step.py [--architecture mlp|cnn]
        [--backends tensorflow,jax,torch]
        [--models ae,vae,betavae,infodropout,vq,softvq,fsq,lfq,rvq] [--steps 50]
        [--deconv auto|subpixel|transpose[,...]]
        [--repeats 5] [--warmup 10] [--threads N]

Timings on a shared machine are noisy: compare ratios from the same run.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

BACKENDS = ("tensorflow", "jax", "torch")
MODELS = ("ae", "vae", "betavae", "infodropout", "vq", "softvq", "fsq", "lfq", "rvq")
BATCH_SIZE = 64
#: The issues' targets for the step time relative to `ae` (rvq: the presets' 4 stages).
TARGET_RATIOS = {"softvq": 1.05, "fsq": 1.15, "lfq": 1.15, "rvq": 1.3}


def numpy_matmul_flops(size=1024, repeats=20):
    """Median float32 matmul throughput of NumPy (FLOP/s) on `size`-square inputs."""
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    a @ b  # warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2.0 * size**3 / statistics.median(times)


def forward_flops(model):
    """FLOPs of one sample's forward pass: Dense, convolutions, codebook products.

    Dense and the bottlenecks' own heads: 2 x kernel size; Conv2D: 2 x kernel
    size per output pixel; Conv2DTranspose: per input pixel (the work a direct
    implementation does); codebook: one product with the latents (distances),
    two for soft VQ (also the posterior mean).
    """
    import math

    flops = 0
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "Conv2D":
            flops += 2 * math.prod(layer.output.shape[1:3]) * math.prod(layer.kernel.shape)
        elif kind in ("Conv2DTranspose", "SubPixelConv2DTranspose"):
            flops += 2 * math.prod(layer.input.shape[1:3]) * math.prod(layer.kernel.shape)
        else:  # Dense, and the Dense heads inside a bottleneck layer
            for weight in layer.weights:
                name = weight.path.rsplit("/", 1)[-1]
                if name == "kernel" and len(weight.shape) == 2:
                    flops += 2 * math.prod(weight.shape)
                elif name == "codebook":
                    products = 2 if kind == "SoftVectorQuantizer" else 1
                    flops += products * 2 * math.prod(weight.shape)
            if kind == "LookupFreeQuantizer":  # the entropy term's (batch, 2^c) product
                flops += 2 * layer.bits * layer.codebook_size
    return flops


def describe_device():
    """The device Keras trains on in this process, e.g. 'cpu:0' or 'gpu:0 (NVIDIA H200)'."""
    import keras

    backend = keras.backend.backend()
    try:
        if backend == "jax":
            import jax

            device = jax.devices()[0]
            return f"{device.platform}:{device.id} ({device.device_kind})"
        if backend == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_logical_devices("GPU")
            return gpus[0].name if gpus else "cpu:0"
        if backend == "torch":
            import torch

            if torch.cuda.is_available():
                return f"cuda:0 ({torch.cuda.get_device_name(0)})"
            return "cpu"
    except Exception as e:  # a description only: never fail the benchmark on it
        return f"unknown ({e})"
    return "unknown"


def worker(args):
    """Time every model on this process's backend; print one JSON line."""
    import numpy as np

    if args.threads and os.environ.get("KERAS_BACKEND") == "torch":
        import torch

        torch.set_num_threads(args.threads)
    import keras

    from softvq_keras import build_autoencoder, dataset_info, make_bottleneck

    peak = numpy_matmul_flops()
    dataset = {"mlp": "mnist", "cnn": "cifar10"}[args.architecture]
    info = dataset_info(dataset)
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = (rng.uniform(size=(args.steps * BATCH_SIZE,) + info.input_shape) + info.offset)
    x = x.astype("float32")
    x_warm = x[: args.warmup * BATCH_SIZE]

    models = {}
    for name in args.models:
        for deconv in args.deconv:
            model, _ = build_autoencoder(
                make_bottleneck(name, dataset, seed=0), info.input_shape, 64,
                args.architecture, pixel_variance=float(x.var()), deconv=deconv,
            )
            model.compile(optimizer=keras.optimizers.Adam(3e-4))
            model.fit(x_warm, batch_size=BATCH_SIZE, epochs=1, verbose=0, shuffle=False)
            models[name if len(args.deconv) == 1 else f"{name}:{deconv}"] = model

    times = {name: [] for name in models}
    for _ in range(args.repeats):
        for name, model in models.items():
            start = time.perf_counter()
            model.fit(x, batch_size=BATCH_SIZE, epochs=1, verbose=0, shuffle=False)
            times[name].append(time.perf_counter() - start)

    results = {}
    for name, model in models.items():
        seconds = statistics.median(times[name])
        samples_per_s = args.steps * BATCH_SIZE / seconds
        flops = 3 * forward_flops(model) * samples_per_s
        results[name] = {
            "step_ms": 1000 * seconds / args.steps,
            "step_ms_min": 1000 * min(times[name]) / args.steps,
            "step_ms_max": 1000 * max(times[name]) / args.steps,
            "samples_per_s": samples_per_s,
            "flops": flops,
            "forward_flops": forward_flops(model),
        }
    print("RESULT " + json.dumps({
        "backend": keras.backend.backend(), "numpy_flops": peak, "models": results,
        "architecture": args.architecture, "device": describe_device(),
    }))


def run_backend(backend, args):
    """Run the worker for `backend` in a child process; return its parsed result."""
    command = [
        sys.executable, os.path.abspath(__file__), "--worker",
        "--models", ",".join(args.models), "--steps", str(args.steps),
        "--architecture", args.architecture, "--deconv", ",".join(args.deconv),
        "--repeats", str(args.repeats), "--warmup", str(args.warmup),
        "--threads", str(args.threads or 0),
    ]
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    if args.threads:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "TF_NUM_INTRAOP_THREADS"):
            env[var] = str(args.threads)
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(
        f"the {backend} benchmark failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
    )


def print_table(result):
    backend, models = result["backend"], result["models"]
    peak = result["numpy_flops"]
    first = next(iter(models))
    ae = models.get("ae", models[first] if first.startswith("ae:") else {})
    base = ae.get("step_ms")
    print(f"\n{backend} on {result['device']}, {result['architecture']}: batch {BATCH_SIZE}, "
          f"NumPy fp32 matmul {peak / 1e9:.1f} GFLOP/s "
          "(MFLOP/sample: forward + backward = 3x forward)")
    base_flops = ae.get("forward_flops")
    base_min = ae.get("step_ms_min")
    print(f"{'model':<19} {'samples/s':>10} {'step ms':>8} {'(min-max)':>15} "
          f"{'vs ae':>7} {'min vs ae':>9} {'MFLOP/sample':>13} {'vs ae':>7} "
          f"{'GFLOP/s':>8} {'% numpy':>8}")
    for name, r in models.items():
        ratio = f"{r['step_ms'] / base:.3f}x" if base else "-"
        min_ratio = f"{r['step_ms_min'] / base_min:.3f}x" if base_min else "-"
        flop_ratio = f"{r['forward_flops'] / base_flops:.3f}x" if base_flops else "-"
        spread = f"{r['step_ms_min']:.2f}-{r['step_ms_max']:.2f}"
        print(f"{name:<19} {r['samples_per_s']:>10.0f} {r['step_ms']:>8.2f} {spread:>15} "
              f"{ratio:>7} {min_ratio:>9} {3 * r['forward_flops'] / 1e6:>13.2f} {flop_ratio:>7} "
              f"{r['flops'] / 1e9:>8.1f} {100 * r['flops'] / peak:>7.1f}%")


def verdicts(results):
    lines = []
    for result in results:
        models = result["models"]
        if "ae" not in models:
            continue
        for name, target in TARGET_RATIOS.items():
            if name not in models:
                continue
            ratio = models[name]["step_ms"] / models["ae"]["step_ms"]
            ok = "meets" if ratio <= target else "MISSES"
            best = models[name]["step_ms_min"] / models["ae"]["step_ms_min"]
            flops = models[name]["forward_flops"] / models["ae"]["forward_flops"]
            lines.append(f"{result['backend']}: {name} step = {ratio:.3f}x ae by median, "
                         f"{best:.3f}x by best run ({ok} the <= {target:.2f}x target "
                         f"by median; {name} has {flops:.3f}x ae's matmul FLOPs)")
    return lines


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--architecture", choices=("mlp", "cnn"), default="mlp",
                        help="the MNIST MLP (default) or the CIFAR-10/SVHN CNN")
    parser.add_argument("--backends", default=",".join(BACKENDS),
                        help="comma-separated Keras backends (default: all three)")
    parser.add_argument("--models", default=",".join(MODELS),
                        help="comma-separated bottlenecks (default: all nine)")
    parser.add_argument("--steps", type=int, default=50, help="timed steps per fit (50)")
    parser.add_argument("--repeats", type=int, default=5, help="timed fits per model (5)")
    parser.add_argument("--warmup", type=int, default=10, help="warm-up steps (10)")
    parser.add_argument("--deconv", default="auto",
                        help="the CNN's transposed convolutions: auto, subpixel, transpose, "
                             "or several comma-separated to time them side by side as "
                             "MODEL:IMPL (default: auto)")
    parser.add_argument("--threads", type=int, default=0,
                        help="cap the frameworks' CPU threads (default: their own choice)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.backends = [b for b in args.backends.split(",") if b]
    args.models = [m for m in args.models.split(",") if m]
    args.deconv = [d for d in args.deconv.split(",") if d]
    for d in args.deconv:
        if d not in ("auto", "subpixel", "transpose"):
            parser.error(f"unknown --deconv {d!r}; expected some of auto, subpixel, transpose")
    for b in args.backends:
        if b not in BACKENDS:
            parser.error(f"unknown backend {b!r}; expected some of {', '.join(BACKENDS)}")
    for m in args.models:
        if m not in MODELS:
            parser.error(f"unknown model {m!r}; expected some of {', '.join(MODELS)}")
    if args.steps < 1 or args.repeats < 1 or args.warmup < 1:
        parser.error("--steps, --repeats and --warmup must be at least 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    results = []
    for backend in args.backends:
        results.append(run_backend(backend, args))
        print_table(results[-1])
    print()
    for line in verdicts(results):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

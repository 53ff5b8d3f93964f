"""Latency and throughput of the BentoML service's `/encode`, next to in-process calls.

    .venv/bin/python benchmarks/serve_latency.py [--run-dir RUN] [--requests 2000]

Prints, for one MNIST-shaped image (784 raw pixels):

- in process: `encoder.predict(x)`, the direct call `encoder(x, training=False)`
  and the service's compiled forward pass (`serving.runtime.RunModel.predict`),
  per call, for 1 image and for 32;
- `/encode` over HTTP, one request at a time on a keep-alive connection:
  p50 / p99 latency (targets: p50 <= 3 ms);
- `/encode` with 32 concurrent clients (one connection each, one image per
  request, and then 32 images per request): images/s, p50 / p99, errors and
  wrong answers (targets: >= 2,000 images/s, 0 errors);
- side by side with the floor: the same `/encode` served by a bare
  Starlette/uvicorn app (`benchmarks/bare_app.py`: the same checks, batching
  and forward pass, no BentoML), in alternating rounds on the same machine in
  the same run, 32 clients, one image per request. Printed: each round's
  images/s, errors and server CPU per request for both, and BentoML's images/s
  as a fraction of the bare app's (target: >= 1/1.3 = 0.77, 0 errors).
  Absolute figures on a loaded machine drift; the ratio of neighbouring
  rounds does not.

Every HTTP answer is checked against the in-process latents (atol 1e-4).

Without `--run-dir` it builds an MNIST-shaped run folder in a temporary
directory: the paper's MNIST softvq autoencoder trained for a few steps on
random pixels (the weights do not matter for latency), K-means and a
softmax head fitted on a few hundred latents. The load generator is a
minimal asyncio HTTP/1.1 client (raw keep-alive sockets): `requests` or
`httpx` cost more CPU per request than the server on a 2-core machine.
"""

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def build_mnist_run(out, seed=0):
    """A minimal MNIST-shaped run folder (docs/ARTIFACTS.md) with barely trained weights."""
    import keras

    from softvq_keras import build_autoencoder, make_bottleneck
    from softvq_keras.evaluation import cluster_label_map, fit_kmeans, linear_probe
    from softvq_keras.presets import DATASETS

    info = DATASETS["mnist"]
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, size=(512, 28, 28)).astype(np.uint8)
    labels = rng.integers(0, 10, size=512)
    x = raw.reshape(512, 784).astype(np.float32) / 255.0
    keras.utils.set_random_seed(seed)
    autoencoder, encoder = build_autoencoder(
        make_bottleneck("softvq", "mnist", seed=seed), info.input_shape, 64, "mlp",
        pixel_variance=float(x.var()),
    )
    autoencoder.compile(optimizer=keras.optimizers.Adam(3e-4))
    autoencoder.fit(x, batch_size=64, epochs=1, verbose=0)
    z = encoder.predict(x, verbose=0)
    kmeans = fit_kmeans(z, 10, n_init=1, seed=seed)
    classifier, _ = linear_probe(z, labels, epochs=1, seed=seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    encoder.save(out / "encoder.keras")
    classifier.save(out / "classifier.keras")
    np.savez(
        out / "kmeans.npz", centroids=kmeans.cluster_centers_.astype(np.float32),
        cluster_to_label=cluster_label_map(labels, kmeans.labels_, 10).astype(np.int64),
    )
    config = {
        "dataset": "mnist", "model": "softvq", "backend": keras.backend.backend(),
        "image_shape": list(info.image_shape), "input_shape": list(info.input_shape),
        "pixel_max": info.pixel_max, "offset": info.offset, "latent_dim": 64,
        "num_classes": 10, "class_names": [str(i) for i in range(10)],
        "note": "benchmark run folder: weights trained 8 steps on random pixels",
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return out


def per_call_ms(fn, x, repeats):
    """Median milliseconds per `fn(x)` over `repeats` calls (after 5 warm-up calls)."""
    for _ in range(5):
        fn(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def in_process(run_dir, image, repeats):
    """Milliseconds per call of predict, the direct call and the service's forward pass."""
    import keras

    from serving.runtime import RunModel

    model = RunModel(run_dir)
    encoder = model.encoder
    x1 = image.reshape(1, 784).astype(np.float32) / 255.0
    x32 = np.repeat(x1, 32, axis=0)
    rows = {}
    for name, fn in {
        "encoder.predict(x)": lambda x: encoder.predict(x, verbose=0),
        "encoder(x, training=False)": lambda x: keras.ops.convert_to_numpy(
            encoder(x, training=False)),
        "service forward pass": model.predict,
    }.items():
        rows[name] = (per_call_ms(fn, x1, repeats), per_call_ms(fn, x32, max(repeats // 4, 20)))
    expected = encoder.predict(x1, verbose=0)[0]
    return rows, expected


class RawClient:
    """One keep-alive HTTP/1.1 connection sending a fixed POST again and again."""

    def __init__(self, host, port, path, body):
        self.host, self.port = host, port
        self.request = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode("ascii") + body

    async def __aenter__(self):
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def __aexit__(self, *exc):
        self.writer.close()

    async def post(self):
        """Send the request; return `(status, body bytes)`."""
        self.writer.write(self.request)
        status = int((await self.reader.readline()).split()[1])
        length = None
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length is None:
            raise RuntimeError("response without Content-Length")
        return status, await self.reader.readexactly(length)


def _check(status, body, expected, n_images):
    """Whether one answer is a 200 with `n_images` latents equal to `expected`."""
    if status != 200:
        return False
    latents = np.asarray(json.loads(body)["latents"], dtype=np.float32)
    return latents.shape == (n_images, expected.size) and np.allclose(
        latents, expected[None, :], atol=1e-4
    )


async def load(url, image, expected, clients, requests_per_client, images_per_request):
    """`clients` connections each sending `requests_per_client` requests, concurrently."""
    host, port = url.split("//")[1].split(":")
    body = json.dumps({"images": [image.reshape(784).tolist()] * images_per_request}).encode()
    latencies, failures = [], []

    async def one_client():
        async with RawClient(host, int(port), "/encode", body) as client:
            for _ in range(requests_per_client):
                start = time.perf_counter()
                try:
                    status, answer = await client.post()
                except (OSError, RuntimeError, asyncio.IncompleteReadError) as e:
                    failures.append(repr(e))
                    return
                latencies.append(time.perf_counter() - start)
                if not _check(status, answer, expected, images_per_request):
                    failures.append(f"HTTP {status}: {answer[:200]!r}")

    start = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(clients)))
    elapsed = time.perf_counter() - start
    done = len(latencies) - len(failures)
    return {
        "images_per_s": done * images_per_request / elapsed,
        "requests": len(latencies),
        "p50_ms": float(np.percentile(latencies, 50) * 1e3),
        "p99_ms": float(np.percentile(latencies, 99) * 1e3),
        "errors": len(failures),
        "first_error": failures[0] if failures else "",
    }


class BareServer:
    """`benchmarks/bare_app.py` under uvicorn in a subprocess (the same defaults as BentoML's)."""

    def __init__(self, run_dir, ready_timeout=180.0):
        from serving.launch import free_port

        self.run_dir = Path(run_dir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ready_timeout = ready_timeout
        self.process = None

    def __enter__(self):
        import subprocess
        import urllib.request

        root = Path(__file__).resolve().parents[1]
        env = {**os.environ, "SOFTVQ_RUN_DIR": str(self.run_dir.resolve()),
               "PYTHONPATH": os.pathsep.join(
                   p for p in (str(root), os.environ.get("PYTHONPATH")) if p)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--app-dir", str(root / "benchmarks"), "--factory",
             "bare_app:create_app", "--host", "127.0.0.1", "--port", str(self.port),
             "--no-access-log", "--log-level", "warning", "--no-server-header"],
            env=env, cwd=str(root), start_new_session=True,
        )
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the bare app exited with {self.process.returncode}")
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        self.__exit__()
        raise RuntimeError("the bare app was not ready in time")

    def __exit__(self, *exc):
        import signal
        import subprocess

        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def server_cpu_seconds(server):
    """CPU seconds used so far by the server's processes (supervisor and workers)."""
    import psutil

    root = psutil.Process(server.process.pid)
    total = 0.0
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def measured(server, coroutine):
    """Run one load phase; add the server's CPU milliseconds per request to its figures."""
    before = server_cpu_seconds(server)
    result = asyncio.run(coroutine)
    result["server_cpu_ms"] = (server_cpu_seconds(server) - before) / max(result["requests"], 1) * 1e3
    return result


def side_by_side(server, bare, image, expected, clients, per_client, rounds):
    """Alternating rounds on BentoML and the bare app; prints the ratio; returns errors."""
    results = {"bentoml": [], "bare": []}
    for name, target in (("bare", bare), ("bentoml", server)):  # warm both up
        asyncio.run(load(target.url, image, expected, clients, 5, 1))
    print(f"\nside by side, /encode, {clients} clients, 1 image/request "
          "(images/s, errors, server CPU ms/request)")
    for index in range(rounds):
        order = [("bentoml", server), ("bare", bare)]
        if index % 2:
            order.reverse()  # neither always runs first
        row = {}
        for name, target in order:
            row[name] = measured(target, load(target.url, image, expected, clients,
                                              per_client, 1))
            results[name].append(row[name])
        print(f"  round {index + 1}: BentoML {row['bentoml']['images_per_s']:6.0f} "
              f"({row['bentoml']['errors']} errors, {row['bentoml']['server_cpu_ms']:.2f} ms)  "
              f"bare {row['bare']['images_per_s']:6.0f} ({row['bare']['errors']} errors, "
              f"{row['bare']['server_cpu_ms']:.2f} ms)  ratio "
              f"{row['bentoml']['images_per_s'] / row['bare']['images_per_s']:.2f}")
    ratios = [b["images_per_s"] / r["images_per_s"]
              for b, r in zip(results["bentoml"], results["bare"])]
    errors = sum(r["errors"] for rs in results.values() for r in rs)
    cpu = {k: float(np.median([r["server_cpu_ms"] for r in v])) for k, v in results.items()}
    ratio = float(np.median(ratios))
    print(f"BentoML / bare app images/s: median {ratio:.2f} (rounds "
          f"{', '.join(f'{r:.2f}' for r in ratios)}; target >= {1 / 1.3:.2f}, i.e. within "
          f"1.3x: {'met' if ratio >= 1 / 1.3 else 'NOT met'}); errors {errors} (target 0); "
          f"server CPU per request {cpu['bentoml']:.2f} ms vs {cpu['bare']:.2f} ms")
    return errors


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", help="an MNIST-shaped run folder (default: build one)")
    parser.add_argument("--requests", type=int, default=2000,
                        help="sequential requests, and about the total of the concurrent test")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating BentoML / bare-app rounds of the side-by-side test")
    parser.add_argument("--side-by-side-only", action="store_true",
                        help="only the side-by-side test against the bare app")
    args = parser.parse_args(argv)

    from serving.launch import BentoServer

    with tempfile.TemporaryDirectory(prefix="softvq-bench-") as tmp:
        run_dir = Path(args.run_dir) if args.run_dir else build_mnist_run(Path(tmp) / "run")
        image = np.random.default_rng(1).integers(0, 256, size=(28, 28)).astype(np.float32)
        rows, expected = in_process(run_dir, image, repeats=300)
        print(f"backend {os.environ['KERAS_BACKEND']}, run folder {run_dir}, {os.cpu_count()} CPUs")
        print("\nin process, ms per call        1 image   32 images")
        for name, (one, many) in rows.items():
            print(f"  {name:<28} {one:8.3f}  {many:9.3f}")

        per_client = max(args.requests // args.clients, 10)
        with BentoServer(run_dir) as server, BareServer(run_dir) as bare:
            errors = side_by_side(server, bare, image, expected, args.clients, per_client,
                                  args.rounds)
            if args.side_by_side_only:
                return 0 if errors == 0 else 1
            seq = measured(server, load(server.url, image, expected, 1, args.requests, 1))
            conc = measured(server, load(server.url, image, expected, args.clients, per_client, 1))
            batched = measured(server, load(
                server.url, image, expected, args.clients, max(per_client // 4, 5), 32))
        calls = [line for line in server.final_log.splitlines() if "model calls by" in line]

        predict_ms = rows["encoder.predict(x)"][0]
        print("\nHTTP /encode                     images/s   p50 ms   p99 ms  errors  "
              "server CPU ms/request")
        for name, r in [
            ("sequential, 1 image/request", seq),
            (f"{args.clients} clients, 1 image/request", conc),
            (f"{args.clients} clients, 32 images/request", batched),
        ]:
            print(f"  {name:<30} {r['images_per_s']:9.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} "
                  f"{r['errors']:7d}  {r['server_cpu_ms']:6.2f}  ({r['requests']} requests)"
                  f"{'  ' + r['first_error'] if r['errors'] else ''}")
        if calls:
            print("server " + calls[-1].split("] ", 2)[-1])
        print(
            f"\nsequential p50 {seq['p50_ms']:.2f} ms (target <= 3 ms: "
            f"{'met' if seq['p50_ms'] <= 3 else 'NOT met'}); "
            f"{seq['p50_ms'] / predict_ms:.1f}x the in-process encoder.predict ({predict_ms:.2f} ms)"
        )
        print(
            f"{args.clients} clients: {conc['images_per_s']:.0f} images/s with one image per "
            f"request (target >= 2,000: {'met' if conc['images_per_s'] >= 2000 else 'NOT met'}), "
            f"{batched['images_per_s']:.0f} with 32 per request; errors "
            f"{conc['errors'] + batched['errors']} (target 0); in-process predict would do "
            f"{1e3 / predict_ms:.0f} images/s one at a time"
        )
        return 0 if conc["errors"] + batched["errors"] + seq["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

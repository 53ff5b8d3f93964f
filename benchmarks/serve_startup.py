"""Time from `bentoml serve` to `/readyz` 200, and where the worker's start-up goes.

    .venv/bin/python benchmarks/serve_startup.py RUN_DIR [--repeats 3] [--against OTHER_CHECKOUT]

Starts `bentoml serve serving.service:SoftVQService` on RUN_DIR (a finished
run folder, e.g. runs/digits-softvq) `--repeats` times and prints, per start,
the seconds until `/readyz` answered 200, until the first `/encode` answered,
and the worker's own "ready" line (the Keras import, loading the encoder and
head, loading the autoencoder, each with its first compilation).

`--against PATH` also starts the service of another checkout (e.g. an older
commit unpacked with `git archive`) in alternating rounds, so that both see
the same load on a shared machine; the ratio of the medians is printed.
"""

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url, body=None, timeout=2):
    request = urllib.request.Request(
        url, data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status


def start_once(repo, run_dir, image_shape, timeout=300):
    """Seconds to `/readyz` 200 and to the first `/encode` answer, and the worker's line."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="softvq-startup-") as home:
        log = open(Path(home) / "server.log", "w+b")
        env = {**os.environ, "SOFTVQ_RUN_DIR": str(Path(run_dir).resolve()),
               "BENTOML_HOME": str(Path(home) / "home"), "BENTOML_DO_NOT_TRACK": "True",
               "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(repo)}
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "bentoml", "serve", "serving.service:SoftVQService",
             "--host", "127.0.0.1", "--port", str(port)],
            cwd=str(repo), env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
        try:
            ready = first = None
            while time.perf_counter() - started < timeout:
                if process.poll() is not None:
                    raise RuntimeError(f"bentoml serve exited with {process.returncode}")
                try:
                    if _get(url + "/readyz") == 200:
                        ready = time.perf_counter() - started
                        break
                except OSError:
                    time.sleep(0.2)
            if ready is None:
                raise RuntimeError(f"not ready in {timeout} s")
            image = [[0] * image_shape[-1]] * image_shape[0] if len(image_shape) == 2 else None
            if image is not None:
                assert _get(url + "/encode", {"images": [image]}, timeout=60) == 200
                first = time.perf_counter() - started
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
            log.seek(0)
            text = log.read().decode("utf-8", "replace")
            log.close()
    found = re.search(r"softvq: worker ready in .*", text)
    return ready, first, found.group(0) if found else "(no worker line: an older checkout)"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--against", help="another checkout, started in alternating rounds")
    args = parser.parse_args(argv)
    config = json.loads((Path(args.run_dir) / "config.json").read_text())
    shape = config["image_shape"]
    repos = {"this": REPO_ROOT}
    if args.against:
        repos["other"] = Path(args.against).resolve()
    ready = {name: [] for name in repos}
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for i in range(args.repeats):
        for name, repo in repos.items():
            r, f, line = start_once(repo, args.run_dir, shape)
            ready[name].append(r)
            first = "" if f is None else f", first /encode answered at {f:.1f} s"
            print(f"[{name} {i + 1}] /readyz 200 after {r:.1f} s{first}; {line}", flush=True)
    for name, values in ready.items():
        print(f"{name}: median {statistics.median(values):.1f} s to ready "
              f"(min {min(values):.1f}, max {max(values):.1f}, {len(values)} starts)")
    if args.against:
        ratio = statistics.median(ready["this"]) / statistics.median(ready["other"])
        print(f"this / other: {ratio:.2f}")
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

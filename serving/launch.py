"""Start `bentoml serve` for a run folder in a subprocess (tests, benchmarks).

>>> with BentoServer("runs/digits-softvq") as server:  # doctest: +SKIP
...     requests.post(server.url + "/encode", json={"images": [[0] * 64]})

`BentoServer(None, env={"SOFTVQ_MODEL": TAG, "BENTOML_HOME": HOME})` serves a
stored run instead, and `service="softvq:latest"` a built Bento.

The server listens on 127.0.0.1 and a free port, with `BENTOML_HOME` in a
temporary folder and `BENTOML_DO_NOT_TRACK=True`; `start()` returns once
`/readyz` answers 200 and raises `RuntimeError` with the server's log if it
exits or is not ready in time. `stop()` ends exactly the process it started.
"""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

SERVICE = "serving.service:SoftVQService"
REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port():
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BentoServer:
    """`bentoml serve serving.service:SoftVQService` on 127.0.0.1 in a subprocess."""

    def __init__(self, run_dir, env=None, port=None, ready_timeout=180.0, service=SERVICE):
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.service = service
        self.env = dict(env or {})
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ready_timeout = ready_timeout
        self.process = None
        self._home = None
        self._log = None
        #: The server's output when it was stopped (its folder is deleted then).
        self.final_log = ""

    def start(self):
        self._home = tempfile.TemporaryDirectory(prefix="softvq-bentoml-")
        self._log = open(Path(self._home.name) / "server.log", "w+b")
        env = {
            **os.environ,
            **({} if self.run_dir is None else {"SOFTVQ_RUN_DIR": str(self.run_dir.resolve())}),
            "BENTOML_HOME": str(Path(self._home.name) / "home"),
            "BENTOML_DO_NOT_TRACK": "True",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p
            ),
            **self.env,
        }
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "bentoml", "serve", self.service,
                "--host", "127.0.0.1", "--port", str(self.port),
            ],
            cwd=str(REPO_ROOT), env=env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() ends it and its workers
        )
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"bentoml serve exited with {self.process.returncode}:\n{self.log()}"
                )
            if self.ready():
                return self
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"bentoml serve not ready in {self.ready_timeout:.0f} s:\n{self.log()}")

    def ready(self):
        """True when `/readyz` answers 200."""
        try:
            with urllib.request.urlopen(self.url + "/readyz", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def log(self, tail=6000):
        """The last `tail` characters of the server's output."""
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")[-tail:]

    def stop(self):
        """SIGTERM the server's process group (SIGKILL after 20 s)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        if self._log is not None:
            self.final_log = self.log(tail=20000)
            self._log.close()
            self._log = None
        if self._home is not None:
            self._home.cleanup()
            self._home = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

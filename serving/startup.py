"""Stop `bentoml serve` with one clear line when the model cannot be loaded.

BentoML creates the service instance in each worker process, and its process
supervisor (circus) restarts a worker that exits, forever: a service whose
run folder or stored model is missing would restart every few seconds and
repeat the same traceback. `load_or_stop(load)` instead logs one line naming
what is wrong and how to fix it, asks the supervising `bentoml serve` process
to shut down (SIGTERM), and ends the worker with exit status 3.

`bentoml serve` itself would then end with status 0, as after Ctrl+C, so a
process manager could not tell the failure from a requested stop: the worker
leaves a marker file for its supervisor, and `exit_nonzero_after_stop()`
(called where the service module is imported, the supervisor included) makes
that process end with status 3 when it finds its marker at exit.

Outside a `bentoml serve` worker (a test building the service in process)
the error is raised as usual.

`Phases` times the worker's start-up (the Keras import, loading the models,
the first compilation) for its one "ready" log line, and
`warm_up_in_background(...)` compiles the other batch sizes after the worker
is ready (serving/README.md, "Start-up").
"""

import atexit
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

logger = logging.getLogger("bentoml.service.softvq")

#: Exit status of a worker that could not load its model.
EXIT_NO_MODEL = 3


def _supervisor_pid():
    """The pid of the `bentoml serve` process supervising this worker, or None."""
    try:
        import psutil

        parent = psutil.Process(os.getppid())
        command = " ".join(parent.cmdline())
    except Exception:  # noqa: BLE001 - no psutil, or the parent is gone
        return None
    return parent.pid if "bentoml" in command and "serve" in command else None


def load_or_stop(load):
    """`load()`, or (in a `bentoml serve` worker) one error line and a clean stop."""
    try:
        return load()
    except Exception as error:  # noqa: BLE001 - any load failure ends the server
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        line = f"softvq: cannot load the model, the server stops: {type(error).__name__}: {message}"
        supervisor = _supervisor_pid()
        if supervisor is None:
            raise
        print(line, file=sys.stderr, flush=True)
        try:
            _marker(supervisor).write_text(line + "\n", encoding="utf-8")
        except OSError:
            pass  # the server still stops, with status 0
        os.kill(supervisor, signal.SIGTERM)
        os._exit(EXIT_NO_MODEL)


def _marker(pid):
    """The file a worker leaves for supervisor `pid` when the model cannot load."""
    return Path(tempfile.gettempdir()) / f"softvq-no-model-{pid}"


def _exit_if_marked():
    marker = _marker(os.getpid())
    if marker.exists():
        marker.unlink(missing_ok=True)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_NO_MODEL)


def exit_nonzero_after_stop():
    """Make this process exit with status 3 if a worker stopped it for want of a model."""
    atexit.register(_exit_if_marked)


class Phases:
    """Wall time of named start-up phases: `with phases("load"): ...`; `str()` lists them."""

    def __init__(self):
        self.started = time.perf_counter()
        self.seconds = {}

    def __call__(self, name):
        phases = self

        class _Phase:
            def __enter__(self):
                self.start = time.perf_counter()

            def __exit__(self, *exc):
                phases.seconds[name] = phases.seconds.get(name, 0.0) + (
                    time.perf_counter() - self.start)

        return _Phase()

    def total(self):
        return time.perf_counter() - self.started

    def __str__(self):
        return ", ".join(f"{name} {s:.1f} s" for name, s in self.seconds.items())


def warm_up_in_background(*models):
    """Call every model's `warm_up()` in a daemon thread; log when done.

    JAX compiles one program per padded batch size; the worker is ready after
    batch size 1 (serving/runtime.py), and a request of another size that
    comes before its compilation compiles it itself, once.
    """

    def run():
        start = time.perf_counter()
        try:
            for model in models:
                model.warm_up()
        except Exception as error:  # noqa: BLE001 - requests still compile on demand
            logger.warning("softvq: background compilation stopped: %s: %s",
                           type(error).__name__, error)
            return
        logger.info("softvq: compiled the other batch sizes in the background in %.1f s",
                    time.perf_counter() - start)

    thread = threading.Thread(target=run, name="softvq-warm-up", daemon=True)
    thread.start()
    return thread

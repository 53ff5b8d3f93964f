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
"""

import atexit
import os
import signal
import sys
import tempfile
from pathlib import Path

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

"""Heartbeats between the processes of a multi-process run: a lost process stops the others.

Without this, a process killed in the middle of a multi-process JAX run leaves
the others in a gradient all-reduce (an error from gloo, then JAX's shutdown
waiting out its own 100 s heartbeat and aborting with a C++ stack trace) or
waiting at a barrier. With it, every process stops within a bounded time with
one line naming the lost process, and exit code 1:

- a thread in every process writes a counter to JAX's distributed key-value
  store (kept by process 0's coordination service) every `PERIOD_S` and reads
  the others';
- a process whose counter has not moved for `SILENT_S` seconds is lost (killed,
  stopped or hung): the watchdog prints the message and ends this process;
- the store unreachable for `UNREACHABLE_S` seconds means process 0 (which
  keeps it) is lost;
- when a collective fails in the training thread (the usual sign of a killed
  peer), `Watchdog.lost` names the lost processes within `CONFIRM_S` seconds.

JAX's own coordination service (in process 0) also watches the processes: when
process 0 dies, JAX ends the others at once, before this watchdog can, with its
own message ("Terminating process because the JAX distributed service detected
fatal errors ... the leader task was preempted/died"; SIGABRT, exit code 134).
`SOFTVQ_PEER_TIMEOUT_S` overrides `SILENT_S`.
"""

import os
import sys
import threading
import time

PERIOD_S = 0.5
#: A process silent this long is lost (scheduling pauses on a loaded machine stay far below).
SILENT_S = 30.0
#: The store unreachable this long: process 0 is lost.
UNREACHABLE_S = 3.0
#: Once a collective failed, a process silent this long is the lost one.
CONFIRM_S = 4.0
KEY = "softvq/heartbeat/"


def silent_limit():
    try:
        return float(os.environ.get("SOFTVQ_PEER_TIMEOUT_S", SILENT_S))
    except ValueError:
        return SILENT_S


class Watchdog:
    """See the module docstring. `client`: JAX's distributed runtime client."""

    def __init__(self, client, process_id, processes, on_lost=None, silent_s=None):
        self.client, self.process_id, self.processes = client, process_id, processes
        self.silent_s = silent_limit() if silent_s is None else silent_s
        self.on_lost = on_lost or self.stop_process
        self._stop = threading.Event()
        self._thread = None
        self._lock = threading.Lock()
        now = time.monotonic()
        self._seen = {p: (None, now) for p in range(processes) if p != process_id}
        self._unreachable_since = None
        self._beat = 0

    # -- the thread ---------------------------------------------------------

    def start(self):
        self._thread = threading.Thread(target=self._run, name="softvq-watchdog", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _run(self):
        while not self._stop.wait(PERIOD_S):
            lost, why = self._check(self.silent_s)
            if lost and not self._stop.is_set():
                self.on_lost(self.message(lost, why))
                return

    def _poll(self):
        """Beat once and read the others' counters; False when the store is unreachable."""
        now = time.monotonic()
        try:
            self._beat += 1
            self.client.key_value_set(f"{KEY}{self.process_id}", str(self._beat), allow_overwrite=True)
            values = dict(self.client.key_value_dir_get(KEY))
        except Exception:
            with self._lock:
                if self._unreachable_since is None:
                    self._unreachable_since = now
            return False
        with self._lock:
            self._unreachable_since = None
            for p, (last, since) in self._seen.items():
                value = values.get(f"{KEY}{p}")
                if value is not None and value != last:
                    self._seen[p] = (value, now)
        return True

    def _check(self, silent_s):
        """`(lost process ids, reason)`; `([], "")` while every process answers."""
        reachable = self._poll()
        now = time.monotonic()
        with self._lock:
            if not reachable:
                if self.process_id != 0 and now - self._unreachable_since >= UNREACHABLE_S:
                    return [0], "its coordination service stopped answering"
                return [], ""
            silent = [p for p, (_, since) in self._seen.items() if now - since >= silent_s]
        return silent, f"no heartbeat for {silent_s:.0f} s"

    # -- after a failed collective -----------------------------------------

    def lost(self, confirm_s=CONFIRM_S):
        """The lost processes and why, watched for up to `confirm_s` seconds
        (`([], "")` when every process still answers)."""
        deadline = time.monotonic() + max(confirm_s, UNREACHABLE_S) + PERIOD_S
        with self._lock:  # count silence from now: a dead process stays silent
            now = time.monotonic()
            self._seen = {p: (last, max(since, now - PERIOD_S)) for p, (last, since) in self._seen.items()}
        while time.monotonic() < deadline:
            found, why = self._check(confirm_s)
            if found:
                return found, why
            time.sleep(PERIOD_S)
        return [], ""

    def message(self, lost, why):
        names = ", ".join(str(p) for p in lost)
        return (f"process {names} of {self.processes} was lost ({why}); process "
                f"{self.process_id} stops too. Start every process again with --resume to "
                "continue from the last complete checkpoint (process 0's checkpoint/)")

    @staticmethod
    def stop_process(message):
        """Print `message` as the CLI's error line and end the process now (exit 1),
        without JAX's shutdown, which would wait for the lost process."""
        print(f"python -m training.fit: error: {message}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(1)



def is_collective_failure(error):
    """Whether `error` came from JAX's runtime (a collective, a barrier), not from this
    process's own code."""
    return type(error).__name__ in ("JaxRuntimeError", "XlaRuntimeError") or (
        "barrier" in str(error).lower() or "gloo" in str(error).lower())


def lost_process_message(watchdog, process_id, processes, error):
    """The error line for `error` of a multi-process run: naming the lost process
    when `watchdog` (or None) finds it, a generic one for a failed collective or
    barrier; None for an error of this process's own code."""
    text = str(error).strip()
    first = text.splitlines()[0][:200] if text else type(error).__name__
    lost, why = watchdog.lost() if watchdog is not None else ([], "")
    if lost:
        return f"{watchdog.message(lost, why)} [{first}]"
    if not is_collective_failure(error):
        return None
    return (
        f"process {process_id} of {processes}: the run failed on another process or between "
        f"processes ({first}); start every process again with --resume to continue from the "
        "last complete checkpoint")

"""Where a run trains: its devices, data parallelism over devices and processes, precision.

`setup(backend, devices, precision)` is called once per run, after the backend
is chosen and before any model exists. It returns a `Plan`:

- JAX: every visible device (`--devices N`: the first N of each process; 1 is
  one device, no distribution). With more than one device it sets
  `keras.distribution.DataParallel` over them (several GPUs, or several CPU
  devices from `XLA_FLAGS=--xla_force_host_platform_device_count=N`). When
  Keras' variables `KERAS_DISTRIBUTION_JOB_ADDRESSES` (process 0's
  `host:port`), `KERAS_DISTRIBUTION_NUM_PROCESSES` and
  `KERAS_DISTRIBUTION_PROCESS_ID` are set, it first joins the other processes
  with `keras.distribution.initialize()` (JAX's distributed runtime; CPU
  collectives through gloo), and trains data-parallel over the devices of all
  of them.
- TensorFlow: one device (the GPU when it sees one). Several GPUs, `--devices`
  > 1 or the multi-process variables are refused with a message saying to use
  JAX (Keras 3's distribution API is JAX-only).
- PyTorch: the same refusals (Keras 3.15 has no distribution for torch).

`--batch-size` is the global batch: every step takes the same `batch_size`
examples as a one-device run, split over the devices (each process reads the
same shuffled order and keeps its own slice, `Plan.shard`), so steps per epoch,
learning rate and results do not depend on the number of devices. The batch
must be a multiple of the device count; the last, smaller batch of an epoch is
cut to a multiple of it.

Process 0 alone writes the run folder (`Plan.is_chief`); every process starts
from process 0's state, restored from its checkpoint on `--resume`
(`training.checkpoint.restore`), trains, checks that its weights equal process 0's
(`Plan.check_replicas`), and the others wait for process 0 to finish writing
(`Plan.wait_for_chief`). The codebook callbacks assign process 0's
codebook on every process (`Plan.agree`). A heartbeat thread
(`training.watchdog`) stops every process, naming the lost one, when one is
killed or hangs (`Plan.lost_process_error`).

`precision(name)` sets the Keras dtype policy for the run (`float32`,
`mixed_bfloat16`, `mixed_float16`); the quantizers' maths stays float32.
Keras is imported inside the functions, after the backend is chosen.
"""

import os
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field

from training.settings import PRECISIONS, UsageError, require

ENV_ADDRESSES = "KERAS_DISTRIBUTION_JOB_ADDRESSES"
ENV_PROCESSES = "KERAS_DISTRIBUTION_NUM_PROCESSES"
ENV_PROCESS_ID = "KERAS_DISTRIBUTION_PROCESS_ID"
ENV_VARS = (ENV_ADDRESSES, ENV_PROCESSES, ENV_PROCESS_ID)
#: How long the other processes wait for process 0 to write the run folder (ms).
WAIT_FOR_CHIEF_MS = 7 * 24 * 3600 * 1000


class DistributedRunError(RuntimeError):
    """Another process of a multi-process run failed, or the replicas disagree."""


def processes_from_env(env=None):
    """`(num_processes, process_id)` from Keras' variables; `(1, 0)` when unset.

    Raises `UsageError` when they are set only in part or malformed.
    """
    env = os.environ if env is None else env
    given = [name for name in ENV_VARS if env.get(name)]
    if not given:
        return 1, 0
    missing = [name for name in ENV_VARS if name not in given]
    require(not missing, f"multi-process training needs {', '.join(ENV_VARS)}; "
            f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set")
    try:
        count, index = int(env[ENV_PROCESSES]), int(env[ENV_PROCESS_ID])
    except ValueError:
        raise UsageError(f"{ENV_PROCESSES} and {ENV_PROCESS_ID} must be integers; got "
                         f"{env[ENV_PROCESSES]!r} and {env[ENV_PROCESS_ID]!r}") from None
    require(count >= 1, f"{ENV_PROCESSES} must be at least 1; got {count}")
    require(0 <= index < count, f"{ENV_PROCESS_ID} must be in 0..{count - 1}; got {index}")
    return count, index


def is_chief_process(env=None):
    """Whether this process writes the run folder (process 0, or no multi-process run)."""
    return processes_from_env(env)[1] == 0


@contextmanager
def precision(name):
    """Set the Keras global dtype policy `name` for the block, then the previous one."""
    import keras

    require(name in PRECISIONS, f"--precision must be one of {', '.join(PRECISIONS)}; got {name!r}")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


@dataclass
class Plan:
    """The devices of a run and how it trains on them (see the module docstring)."""

    backend: str
    devices: list  # names of every device trained on, all processes: ["cpu:0", "cpu:1"]
    device_kind: str  # e.g. "cpu", "NVIDIA H200"
    processes: int = 1
    process_id: int = 0
    _distribution: object = field(default=None, repr=False)
    _watchdog: object = field(default=None, repr=False)

    @property
    def data_parallel(self):
        return len(self.devices) > 1

    @property
    def is_chief(self):
        return self.process_id == 0

    def config(self):
        """The config.json entries: `devices`, `device_kind`, `distribution`."""
        return {
            "devices": list(self.devices),
            "device_kind": self.device_kind,
            "distribution": {"processes": self.processes, "devices": len(self.devices)},
        }

    def describe(self, batch_size=None):
        """The log line naming the devices."""
        names = ", ".join(self.devices[:8]) + (", ..." if len(self.devices) > 8 else "")
        line = f"Training on {len(self.devices)} device{'s' * (len(self.devices) > 1)} ({names}; {self.device_kind})"
        if self.processes > 1:
            line += f", process {self.process_id} of {self.processes}"
        if self.data_parallel and batch_size:
            line += (f", data parallel: global batch {batch_size}, "
                     f"{batch_size // len(self.devices)} per device")
        return line + "."

    def check_batch_size(self, batch_size):
        """Refuse a global batch the devices cannot split evenly (`UsageError`)."""
        n = len(self.devices)
        require(batch_size % n == 0,
                f"--batch-size {batch_size} (the global batch) must be a multiple of the "
                f"{n} devices trained on; e.g. {max(n, batch_size // n * n)}")

    def steps_per_epoch(self, num_examples, batch_size):
        """Steps per epoch: ceil(N / B), less the last batch when it is cut to nothing."""
        full, rest = divmod(num_examples, batch_size)
        return full + (1 if rest >= len(self.devices) else 0)

    def shard(self, dataset, num_examples, batch_size):
        """Each global batch of `dataset` (`batch_size` of `num_examples` per epoch),
        cut to a multiple of the device count, and this process's contiguous slice
        of it (the whole batch for one process); a last batch cut to nothing is
        left out (see `steps_per_epoch`)."""
        if not self.data_parallel:
            return dataset
        from softvq_keras.data import import_tensorflow

        tf = import_tensorflow()
        devices, processes, index = len(self.devices), self.processes, self.process_id

        def local_part(batch):
            per_process = (tf.shape(batch)[0] // devices) * devices // processes
            return batch[index * per_process:(index + 1) * per_process]

        steps = self.steps_per_epoch(num_examples, batch_size)
        if steps < -(-num_examples // batch_size):
            dataset = dataset.take(steps)
        return dataset.map(local_part)

    @contextmanager
    def local(self):
        """A block run outside the distribution (on this process's default device)."""
        if self._distribution is None:
            yield
            return
        import keras

        keras.distribution.set_distribution(None)
        try:
            yield
        finally:
            keras.distribution.set_distribution(self._distribution)

    def local_float32_copy(self, autoencoder, build):
        """`build()`'s (autoencoder, encoder), made in float32 outside the
        distribution, holding `autoencoder`'s weights: for exports and evaluation."""
        import keras

        policy = keras.config.dtype_policy()
        with self.local():
            keras.config.set_dtype_policy("float32")
            try:
                copy, encoder = build()
            finally:
                keras.config.set_dtype_policy(policy)
            copy.set_weights(autoencoder.get_weights())
        self.close()  # what follows (exports, K-means, probe) runs on one device
        return copy, encoder

    def end(self):
        """The run is over on this process: stop the watchdog, leave the distribution."""
        self.stop_watchdog()
        self.close()

    def close(self):
        """Leave the distribution set by `setup` (the process may train again)."""
        if self._distribution is not None:
            import keras

            keras.distribution.set_distribution(None)
            self._distribution = None

    # -- agreement between processes (JAX, several processes) ----------------

    def agree(self, tree):
        """`tree` (an array or a pytree of arrays) as process 0 has it, on every
        process, as NumPy arrays (unchanged for one process)."""
        if self.processes == 1:
            return tree
        import jax
        import numpy as np
        from jax.experimental import multihost_utils

        return jax.tree.map(np.asarray, multihost_utils.broadcast_one_to_all(tree))

    def check_replicas(self, model):
        """CRC-32 of `model`'s weights; raises `DistributedRunError` unless every
        device of every process holds the same values."""
        import numpy as np

        crc = 0
        for variable in model.weights:
            value = variable.value
            shards = getattr(value, "addressable_shards", None)
            local = [np.asarray(s.data) for s in shards] if shards else [np.asarray(value)]
            if any(not np.array_equal(local[0], other) for other in local[1:]):
                raise DistributedRunError(
                    f"the replicas of {variable.path} differ between this process's devices"
                )
            crc = zlib.crc32(np.ascontiguousarray(local[0]).tobytes(), crc)
        if self.processes > 1:
            from jax.experimental import multihost_utils

            crcs = np.asarray(multihost_utils.process_allgather(np.array([crc], np.uint32)))
            crcs = [int(c) for c in crcs.ravel()]
            if len(set(crcs)) > 1:
                raise DistributedRunError(
                    f"the weights differ between processes after training (CRC-32 per process: "
                    f"{', '.join(f'{c:08x}' for c in crcs)})"
                )
        return crc

    def wait_for_chief(self, what="run-folder-written"):
        """Barrier of all processes (no-op for one): the others wait for process 0.

        Then every process stops its watchdog and meets the others once more, so
        that none reports process 0 lost when it exits first.
        """
        if self.processes == 1:
            return
        self._barrier(what, WAIT_FOR_CHIEF_MS)
        self.stop_watchdog()
        self._barrier(f"{what}-done", 600_000)

    def _barrier(self, name, timeout_ms):
        from jax._src import distributed

        try:
            distributed.global_state.client.wait_at_barrier(f"softvq-{name}", timeout_ms)
        except Exception as e:  # the coordinator (process 0) or another process stopped
            raise self.lost_process_error(e) from None

    # -- a lost process (training.watchdog) ---------------------------------

    def start_watchdog(self):
        """Heartbeats with the other processes (`training.watchdog`); several processes only."""
        if self.processes == 1 or self._watchdog is not None:
            return
        from jax._src import distributed

        from training.watchdog import Watchdog

        self._watchdog = Watchdog(
            distributed.global_state.client, self.process_id, self.processes).start()

    def stop_watchdog(self):
        if self._watchdog is not None:
            self._watchdog.stop()
            self._watchdog = None

    def lost_process_error(self, error):
        """`DistributedRunError` for `error` raised by a collective or a barrier,
        naming the lost process when the heartbeats show it (`training.watchdog`);
        `error` itself when it is this process's own."""
        from training.watchdog import lost_process_message

        message = lost_process_message(self._watchdog, self.process_id, self.processes, error)
        return error if message is None else DistributedRunError(message)


def setup(backend, devices=None):
    """Find the devices, join the other processes, set the distribution; return a `Plan`.

    Args:
        backend: the Keras backend (already chosen; Keras may not be imported yet).
        devices: `--devices`: devices per process to train on (default: all visible).

    Raises `UsageError` for a setting this backend or machine cannot honour.
    """
    processes, process_id = processes_from_env()
    if backend == "jax":
        return _setup_jax(devices, processes, process_id)
    require(processes == 1,
            f"multi-process training ({ENV_PROCESSES}={processes}) needs the JAX backend "
            f"(--backend jax): Keras' distribution API is JAX-only; this run uses {backend}")
    if backend == "tensorflow":
        return _setup_tensorflow(devices)
    return _setup_torch(devices)


def _setup_jax(devices, processes, process_id):
    import jax

    if processes > 1:
        # CPU devices exchange gradients through gloo (GPUs use NCCL whatever this says).
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        import keras

        try:
            keras.distribution.initialize()  # reads the KERAS_DISTRIBUTION_* variables
        except Exception as e:
            raise UsageError(
                f"process {process_id} of {processes} could not join the run at "
                f"{os.environ[ENV_ADDRESSES]} ({str(e).splitlines()[0][:200]}); is process 0 "
                "running, and are the address and port reachable?"
            ) from None
    everything = jax.devices()
    per_process = [[d for d in everything if d.process_index == p] for p in range(processes)]
    visible = min(len(found) for found in per_process)
    local = per_process[process_id]
    require(devices is None or devices <= visible,
            f"--devices {devices}: this machine's {jax.default_backend()} backend sees "
            f"{len(local)} device{'s' * (len(local) > 1)} ({', '.join(_jax_name(d) for d in local)})"
            + ("" if processes == 1 else f"; the fewest of any process is {visible}"))
    chosen = [d for found in per_process for d in found[: devices or visible]]
    plan = Plan("jax", [_jax_name(d) for d in chosen], chosen[0].device_kind, processes, process_id)
    plan.start_watchdog()  # a lost process stops the others (training.watchdog)
    if len(chosen) > 1:
        import keras

        plan._distribution = keras.distribution.DataParallel(
            devices=chosen, auto_shard_dataset=False  # Plan.shard gives each process its part
        )
        keras.distribution.set_distribution(plan._distribution)
    return plan


def _jax_name(device):
    return f"{device.platform}:{device.id}"


def _setup_tensorflow(devices):
    from softvq_keras.data import import_tensorflow

    tf = import_tensorflow()
    gpus = tf.config.list_physical_devices("GPU")
    several = "use --backend jax (Keras' distribution API is JAX-only)"
    require(len(gpus) <= 1 or devices == 1,
            f"this machine has {len(gpus)} GPUs; training on several needs the JAX backend: "
            f"{several}, or pass --devices 1 to train on one")
    require(devices in (None, 1),
            f"--devices {devices}: the tensorflow backend trains on one device here "
            f"({len(gpus)} GPU{'s' * (len(gpus) != 1)} visible); {several}")
    if not gpus:
        return Plan("tensorflow", ["cpu:0"], "cpu")
    if len(gpus) > 1:
        tf.config.set_visible_devices(gpus[0], "GPU")
    details = tf.config.experimental.get_device_details(gpus[0])
    return Plan("tensorflow", ["gpu:0"], details.get("device_name", "GPU"))


def _setup_torch(devices):
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    several = ("use --backend jax (Keras 3 has no distribution support for PyTorch)")
    require(count <= 1 or devices == 1,
            f"this machine has {count} GPUs; training on several needs the JAX backend: "
            f"{several}, or pass --devices 1 to train on one")
    require(devices in (None, 1),
            f"--devices {devices}: the torch backend trains on one device; {several}")
    if count:
        return Plan("torch", ["cuda:0"], torch.cuda.get_device_name(0))
    return Plan("torch", ["cpu:0"], "cpu")

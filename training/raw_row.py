"""The raw-pixel row, computed once per dataset and reused by every run and table.

The raw row (K-means and the softmax probe on the scaled pixels themselves)
depends only on the data and the evaluation protocol, never on a run's model
or seed, so it is computed once, with the protocol seed 0, and cached:

    <cache>/raw-rows/<name>-<fingerprint>.json

where `<cache>` is `$SOFTVQ_CACHE_DIR`, else `$XDG_CACHE_HOME/softvq-keras`,
else `~/.cache/softvq-keras`, and the fingerprint hashes

- the data: the in-memory arrays' bytes (built-in datasets, `.npz` files), a
  folder's file list (relative paths, sizes, modification times), or a
  `tfds:` set's name and split sizes;
- the preprocessing: image and input shapes, channels, scaling, resizing, the
  drawn test split (`test_fraction`, its seed) of data without one;
- the protocol: K-means initializations, clusters, probe epochs, the sample
  size of a streamed source, and `PROTOCOL` (bumped when the computation
  changes).

The file holds the scores, the protocol and the fingerprint's inputs, and is
written atomically; a changed file, preprocessing or protocol gives another
fingerprint, so a stale row is never reused.
"""

import hashlib
import json
import os
from pathlib import Path

from training import artifacts

#: Version of the raw row's computation (K-means implementation, probe).
PROTOCOL = ("raw-row-v3: fit_kmeans (numba k-means++, exact Lloyd, lowest inertia), "
            "linear_probe, seed 0")
#: The seed of the raw row's sample, K-means and probe, whatever the run's seed.
RAW_SEED = 0


def cache_dir():
    """Where cached raw rows live (see the module docstring)."""
    root = os.environ.get("SOFTVQ_CACHE_DIR")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "softvq-keras"


def _data_digest(data):
    """sha256 of what the data is: array bytes, a folder's file list, or a tfds: name."""
    digest = hashlib.sha256()
    source = data.source
    arrays = getattr(source, "arrays", None)
    if arrays is not None:
        for split in ("train", "test"):
            for array in arrays[split]:
                if array is None:
                    digest.update(b"none")
                    continue
                digest.update(f"{array.dtype}{array.shape}".encode())
                digest.update(memoryview(array).cast("B") if array.flags.c_contiguous
                              else array.tobytes())
        return digest.hexdigest()
    files = getattr(source, "files", None)
    if files is not None:
        root = Path(data.info.source)
        for split in ("train", "test"):
            paths, labels = files[split]
            for i, path in enumerate(paths):
                stat = os.stat(path)
                try:
                    rel = Path(path).relative_to(root)
                except ValueError:
                    rel = Path(path)
                label = None if labels is None else int(labels[i])
                digest.update(f"{split}|{rel}|{stat.st_size}|{stat.st_mtime_ns}|{label}\n".encode())
        return digest.hexdigest()
    builder = getattr(source, "builder", None)
    version = getattr(getattr(builder, "info", None), "version", None)
    digest.update(f"{data.info.dataset}|{version}|{data.info.num_train}|{data.info.num_test}"
                  .encode())
    return digest.hexdigest()


def fingerprint(data, *, kmeans_init, probe_epochs, n_clusters, sample, test_fraction=None):
    """`(hex digest, description)` of the raw row of `data` under this protocol."""
    info = data.info
    description = {
        "dataset": str(info.dataset),
        "kind": info.kind,
        "data_sha256": _data_digest(data),
        "preprocessing": {
            "image_shape": list(info.image_shape), "input_shape": list(info.input_shape),
            "channels": info.channels, "pixel_max": info.pixel_max, "offset": info.offset,
            **dict(info.preprocessing or {}),
            "split": "given" if info.split_given else {"test_fraction": test_fraction,
                                                       "seed": RAW_SEED},
        },
        "protocol": {
            "version": PROTOCOL, "kmeans_init": int(kmeans_init), "clusters": int(n_clusters),
            "probe_epochs": int(probe_epochs), "seed": RAW_SEED, "sample": sample,
        },
    }
    text = json.dumps(description, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20], description


def raw_scores(data, *, kmeans_init, probe_epochs, timer=None, announce=False,
               test_fraction=None, say=None):
    """The raw row of `data` (`training.data.RunData`): from the cache, else computed and cached.

    Returns the scores dict (`clustering_accuracy`, `nmi`,
    `classification_accuracy`, `timings_s.total` of the computation, `sample`
    `{"train", "test", "whole"}`, `cached` True when read back). `announce`:
    the computation prints its line through `timer.say`; `say` (e.g. `print`)
    tells where a cached row was read from.
    """
    from training.data import RAW_SAMPLE
    from training.scores import PhaseTimer, flat_images, representation_scores
    from training.settings import run_name

    n_clusters = int(data.info.num_classes or 10)
    sample = None if data.in_memory else RAW_SAMPLE
    key, description = fingerprint(
        data, kmeans_init=kmeans_init, probe_epochs=probe_epochs, n_clusters=n_clusters,
        sample=sample, test_fraction=test_fraction,
    )
    path = cache_dir() / "raw-rows" / f"{run_name(str(data.info.dataset))}-{key}.json"
    timer = timer or PhaseTimer()
    if path.is_file():
        with timer.phase("raw"):  # the read-back's own seconds
            try:
                stored = artifacts.read_json(path)
            except (OSError, ValueError):
                stored = None
        if stored and stored.get("fingerprint") == key:
            if say:
                say(f"Raw-pixel baseline: reusing {path}", flush=True)
            return {**stored["scores"], "cached": True}
    before = timer.seconds.get("raw", 0.0)
    x_tr, y_tr, whole_tr = data.raw_sample("train", RAW_SEED)
    x_te, y_te, whole_te = data.raw_sample("test", RAW_SEED)
    what = (f"Raw-pixel baseline on {len(x_tr):,} training and {len(x_te):,} test images"
            + ("" if whole_tr and whole_te else " (a seeded sample)")) if announce else None
    scores = representation_scores(
        flat_images(x_tr), y_tr, flat_images(x_te), y_te, kmeans_init=kmeans_init,
        probe_epochs=probe_epochs, seed=RAW_SEED, timer=timer, n_clusters=n_clusters,
        num_classes=n_clusters, what=what,
    )
    scores["timings_s"] = {"total": timer.seconds["raw"] - before}
    scores["sample"] = {"train": len(x_tr), "test": len(x_te),
                        "whole": bool(whole_tr and whole_te)}
    path.parent.mkdir(parents=True, exist_ok=True)
    artifacts.write_json(path, {"fingerprint": key, "computed_from": description,
                                "scores": scores})
    return {**scores, "cached": False}

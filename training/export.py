"""`python -m training.export RUN_DIR --format onnx|litert|openvino|saved_model|all`.

Writes a finished run's models in formats that apps load without Keras, into
`RUN_DIR/export/`, and checks every file in its own runtime before keeping it:

- `onnx`: `encoder.onnx`, `classifier.onnx` (labelled runs) and
  `autoencoder.onnx` (scaled image -> reconstruction, what `/reconstruct`
  computes; runs with `autoencoder.keras`), for onnxruntime;
- `litert`: `encoder.tflite`, `classifier.tflite`, for ai-edge-litert;
- `openvino`: `encoder.xml`/`.bin`, `classifier.xml`/`.bin`, for OpenVINO;
- `saved_model`: `saved_model/` with the endpoints `serve` (the encoder) and
  `classify` (the softmax head), for TensorFlow;
- `manifest.json`: what an app needs with NumPy alone (input shape and dtype,
  pixel range and scaling, K-means centroids, class names) and, per file, its
  size and the measured difference to the `.keras` model.

The check: 256 test images of the run's dataset (all when fewer), in batches
of 256 and of 1, through the exported encoder and then the exported softmax
head, compared with the `.keras` models: the latents (and reconstructions)
within 1e-4 and the same predicted classes, else exit 3 naming the format and
the difference, and `export/` is left as it was. `export/` is replaced
atomically (written in `export.tmp/`, then renamed); formats exported before
and not named now are kept.

The export runs under Keras' TensorFlow backend whatever backend trained the
run (the `.keras` files load under any backend): this command sets it.
Exit codes: 0; 2 a bad run folder, unavailable test data or a missing package
(with the pip command); 3 an export that does not match its `.keras` model.

Here: the command and `export_run` (load, write, check, swap the folder in);
`training.export_formats` the writers and runtimes, `training.export_check` the
comparison, `training.export_manifest` manifest.json.
"""

import os
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from training import artifacts
from training.export_check import CHECK_IMAGES, TOLERANCE, MismatchError, Reference, compare
from training.export_formats import (
    FORMATS,
    MODULES,
    OPENVINO_CONFIG,
    ExportError,
    files_of,  # noqa: F401 - used through this module by tests' stand-ins
    missing_packages,
    parse_formats,
    pip_command,
    runner,
    write,
    write_saved_model,
)
from training.export_manifest import (
    DESCRIPTIONS,
    MANIFEST,
    file_size,
    describe,
    manifest_base,
    old_entries,
)

EXIT_USAGE = 2
EXIT_MISMATCH = 3
#: The models each format carries (the ONNX one also the reconstruction).
MODELS = {
    "onnx": ("encoder", "classifier", "autoencoder"),
    "litert": ("encoder", "classifier"),
    "openvino": ("encoder", "classifier"),
}
RUNTIMES = {"onnx": "onnxruntime", "litert": "ai-edge-litert", "openvino": "openvino",
            "saved_model": "tensorflow"}


class UsageError(ValueError):
    """A bad run folder, missing data or package; one line, exit 2."""


def check_run(run_dir):
    """config.json of a finished run folder, or `UsageError`."""
    run_dir = Path(run_dir)
    if not (run_dir / artifacts.CONFIG).is_file():
        raise UsageError(f"{str(run_dir)!r} is not a run folder (no config.json)")
    config = artifacts.read_json(run_dir / artifacts.CONFIG)
    labelled = config.get("labelled", True) is not False
    needed = [artifacts.ENCODER, artifacts.KMEANS, artifacts.METRICS]
    needed += [artifacts.CLASSIFIER] if labelled else []
    missing = [name for name in needed if not (run_dir / name).is_file()]
    if missing or (run_dir / artifacts.CHECKPOINT).exists():
        raise UsageError(f"{str(run_dir)!r} is not a finished run (missing "
                         f"{', '.join(missing) or 'nothing, but checkpoint/ is left'}); "
                         "export a run that python -m training.fit finished")
    return config


def use_tensorflow():
    """Make sure Keras runs on TensorFlow here; `UsageError` when it cannot."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "keras" in sys.modules:
        import keras

        if keras.backend.backend() != "tensorflow":
            raise UsageError(
                f"Keras is already loaded with the {keras.backend.backend()} backend in this "
                "process; the export needs TensorFlow: run python -m training.export")
    os.environ["KERAS_BACKEND"] = "tensorflow"
    from training.data import import_tensorflow

    import_tensorflow()  # its C++ start-up lines silenced


def load_models(run_dir, config):
    """{name: called Keras model} of the run: encoder, classifier, autoencoder."""
    import keras

    run_dir = Path(run_dir)
    models = {"encoder": keras.saving.load_model(run_dir / artifacts.ENCODER, safe_mode=True)}
    if config.get("labelled", True) is not False:
        models["classifier"] = keras.saving.load_model(run_dir / artifacts.CLASSIFIER,
                                                       safe_mode=True)
    if (run_dir / artifacts.AUTOENCODER).is_file():
        from softvq_keras import Autoencoder  # noqa: F401 - registers it and its layers

        whole = keras.saving.load_model(run_dir / artifacts.AUTOENCODER, safe_mode=True,
                                        compile=False)
        models["autoencoder"] = keras.Model(
            whole.inputs, whole.output["reconstruction"], name="autoencoder")
    for model in models.values():  # Keras exports only models that were called
        model(np.zeros((1,) + tuple(model.input_shape[1:]), np.float32), training=False)
    return models


def quiet_warnings():
    """Silence the converters' warnings that say nothing about the run."""
    warnings.filterwarnings("ignore", message=r"The structure of `inputs`")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"keras\.src\.export")


def test_images(config, data_dir=None, n=CHECK_IMAGES):
    """At most `n` scaled test images of the run's dataset (a seeded subset)."""
    from training.data import open_run_data
    from training.settings import UsageError as DataUsageError

    try:
        data = open_run_data(config, data_dir)
    except DataUsageError as e:
        raise UsageError(f"the check needs the run's test images: {e} "
                         "(give --data-dir)") from None
    x, _, _ = data.sample("test", n, int(config.get("seed", 0)))
    return np.asarray(x, np.float32)


def export_format(fmt, models, folder, ref, centroids, say=None):
    """Write `fmt` into `folder`, check it; returns its manifest entries
    `(format entry, {file: entry})`."""
    started = time.perf_counter()
    names = [name for name in MODELS.get(fmt, ("encoder", "classifier")) if name in models]
    if fmt == "saved_model":
        endpoints = {"serve": models["encoder"]}
        if "classifier" in models:
            endpoints["classify"] = models["classifier"]
        write_saved_model(endpoints, Path(folder) / "saved_model")
        run = {name: runner(fmt, Path(folder) / "saved_model",
                            "serve" if name == "encoder" else "classify")
               for name in names}
        written = {name: ["saved_model"] for name in names}
    else:
        written = {name: write(fmt, models[name], folder, name) for name in names}
        run = {name: runner(fmt, Path(folder) / written[name][0]) for name in names}
    found = compare(fmt, run, ref, centroids)
    seconds = time.perf_counter() - started
    files = {}
    for name in names:
        for i, file in enumerate(written[name]):
            key = file + "/" if fmt == "saved_model" else file
            if key in files:
                files[key]["models"].append(name)
                continue
            entry = {"format": fmt, "bytes": file_size(Path(folder) / file)}
            if fmt == "saved_model":
                entry["models"] = [name]
                entry["endpoints"] = {"encoder": "serve", "classifier": "classify"}
                entry["differences"] = {}
            else:
                entry["model"] = name
            if i == 0 and fmt != "saved_model":
                entry.update(found[name])
                entry["description"] = DESCRIPTIONS[name]
            elif i > 0:
                entry["weights_of"] = written[name][0]
            files[key] = entry
        if fmt == "saved_model":
            files["saved_model/"]["differences"][name] = found[name]
    if say:
        worst = max(v["max_abs_diff"] for v in found.values())
        say(f"{fmt}: {', '.join(sorted(files))} written and checked in "
            f"{RUNTIMES[fmt]} in {seconds:.1f} s (max abs difference {worst:.2g})")
    entry = {"runtime": RUNTIMES[fmt],
             "models": {name: written[name][0] + ("/" if fmt == "saved_model" else "")
                        for name in names},
             "pip": [p for _, p in MODULES[fmt] if p not in ("onnx", "tf2onnx")]
             or ["tensorflow-cpu"],
             "files": sorted(files), "seconds": round(seconds, 2)}
    if fmt == "openvino":
        entry["compile_config"] = dict(OPENVINO_CONFIG)
    return entry, files


def export_run(run_dir, formats, data_dir=None, say=print):
    """Export `run_dir`'s models to `formats` (see the module docstring).

    Returns the manifest. Raises `UsageError` (exit 2) or `MismatchError` (exit 3).
    """
    run_dir = Path(run_dir)
    config = check_run(run_dir)
    missing = missing_packages(formats)
    if missing:
        raise UsageError(f"exporting {', '.join(formats)} needs {', '.join(missing)}, "
                         f"not installed: {pip_command(missing)}")
    use_tensorflow()
    quiet_warnings()
    x = test_images(config, data_dir)
    models = load_models(run_dir, config)
    base = manifest_base(run_dir, config, formats, len(x))
    centroids = np.asarray(base["kmeans"]["centroids"], np.float32)
    ref = Reference(models, x, centroids)
    final = run_dir / artifacts.EXPORT
    tmp = run_dir / f"{artifacts.EXPORT}.tmp"
    old = run_dir / f"{artifacts.EXPORT}.old"
    for leftover in (tmp, old):
        shutil.rmtree(leftover, ignore_errors=True)
    tmp.mkdir()
    try:
        kept, files = old_entries(final, base, formats)
        for name in files:
            source = final / name.rstrip("/")
            if source.is_dir():
                shutil.copytree(source, tmp / name.rstrip("/"))
            else:
                shutil.copy2(source, tmp / name)
        done = dict(kept)
        for fmt in formats:
            try:
                done[fmt], written = export_format(fmt, models, tmp, ref, centroids, say)
            except MismatchError:
                raise
            except Exception as e:  # noqa: BLE001 - a converter's or runtime's failure
                raise ExportError(f"{fmt}: the export failed: {type(e).__name__}: "
                                  f"{str(e).splitlines()[0] if str(e) else ''}") from e
            files.update(written)
        manifest = {**base, "formats": {f: done[f] for f in FORMATS if f in done},
                    "files": dict(sorted(files.items()))}
        artifacts.write_json(tmp / MANIFEST, manifest)
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return manifest


class ExportFailed(RuntimeError):
    """`training.fit --export`: the run is finished, its export is not; `code` is
    the export's exit code (2 or 3, 1 for a converter failure)."""

    def __init__(self, message, code):
        super().__init__(message)
        self.code = code


def export_in_subprocess(run_dir, formats, data_dir=None):
    """`python -m training.export RUN_DIR --format FORMATS` in a fresh process
    (the TensorFlow backend, whatever this process runs); `ExportFailed` unless
    it exits 0. Its output goes to this process's; stderr is read for the error."""
    import subprocess

    command = [sys.executable, "-m", "training.export", str(run_dir), "--format",
               formats if isinstance(formats, str) else ",".join(formats)]
    if data_dir:
        command += ["--data-dir", str(data_dir)]
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stdout.flush()
    proc = subprocess.run(command, env=env, stderr=subprocess.PIPE, text=True)
    if proc.returncode == 0:
        return
    prefix = "python -m training.export: error: "
    errors = [line[len(prefix):] for line in proc.stderr.splitlines() if line.startswith(prefix)]
    reason = errors[-1] if errors else (proc.stderr.strip().splitlines() or ["no output"])[-1]
    raise ExportFailed(f"the run in {run_dir} is finished, but its export failed: {reason}",
                       proc.returncode)


def build_parser():
    from training.evaluate import OneLineErrorParser

    parser = OneLineErrorParser(
        prog="python -m training.export",
        description=(
            "Export a finished run's encoder, softmax head and autoencoder to ONNX, LiteRT, "
            "OpenVINO and/or a TensorFlow SavedModel in RUN_DIR/export/, with "
            "manifest.json. Every file is checked in its own runtime on 256 test images "
            f"(latents within {TOLERANCE:g} of the .keras models, the same classes). The "
            "export runs under Keras' TensorFlow backend whatever backend trained the run "
            "(this command sets it; the .keras files load under any backend)."
        ),
        epilog=("needs: pip install 'softvq-keras[export]' (tensorflow-cpu, onnx, onnxruntime, "
                "tf2onnx, ai-edge-litert, openvino). exit codes: 0 done; "
                "2 bad run folder, test data or missing package; 3 an export differs from "
                "its .keras model (export/ is left as it was)."),
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a finished run folder")
    parser.add_argument(
        "--format", default="all",
        help="onnx, litert, openvino, saved_model or all; several comma-separated "
        "(default: all)",
    )
    parser.add_argument(
        "--data-dir", default=None,
        help="folder with the dataset's .npz copy, for the check images (default: the run's)",
    )
    return parser


def main(argv=None):
    """Entry point; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        formats = parse_formats(args.format)
    except ValueError as e:
        parser.error(f"--format: {e}")
    if args.data_dir is not None and not Path(args.data_dir).is_dir():
        parser.error(f"--data-dir {args.data_dir!r} is not a directory")
    try:
        manifest = export_run(args.run_dir, formats, args.data_dir,
                              say=lambda text: print(text, flush=True))
    except UsageError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except MismatchError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return EXIT_MISMATCH
    except ExportError as e:
        print(f"{parser.prog}: error: {e}; nothing was written to export/", file=sys.stderr)
        return 1
    print(f"Wrote {Path(args.run_dir) / artifacts.EXPORT}/ ({len(manifest['files'])} files "
          f"and {MANIFEST}):")
    print(describe(manifest))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The export formats of `python -m training.export`: how each is written and run.

Each format has a writer (Keras 3's `model.export(path, format=...)` under the
TensorFlow backend; a `keras.export.ExportArchive` for the SavedModel) and a
runner that loads the written file in the format's own runtime, as an app
would, and returns `f(x) -> numpy array`:

| format | files (per model) | runtime | pip packages |
|---|---|---|---|
| `onnx` | `NAME.onnx` | onnxruntime | onnx, onnxruntime, tf2onnx |
| `litert` | `NAME.tflite` | ai-edge-litert's `Interpreter` | ai-edge-litert |
| `openvino` | `NAME.xml` + `NAME.bin` | OpenVINO on the CPU, f32 | openvino |
| `saved_model` | `saved_model/` (endpoints `serve`, `classify`) | TensorFlow | (tensorflow) |

All four are written from a TensorFlow-backend process: Keras 3.15 writes
LiteRT only from TensorFlow or PyTorch, ONNX from JAX only with the extra
`jax2onnx`, and OpenVINO failed on JAX (shared notes, "Exporting with Keras
3.15"). OpenVINO's CPU plugin computes in bfloat16 by default on CPUs with
AVX-512 BF16 (0.8e-3 off the Keras latents on this machine); the runner and the
manifest ask for f32 (`INFERENCE_PRECISION_HINT`), which agrees to 1e-7.
"""

import importlib.metadata
import importlib.util
import os

FORMATS = ("onnx", "litert", "openvino", "saved_model")
#: Python modules each format needs, with the pip package that provides them.
MODULES = {
    "onnx": (("onnx", "onnx"), ("onnxruntime", "onnxruntime"), ("tf2onnx", "tf2onnx")),
    "litert": (("ai_edge_litert", "ai-edge-litert"),),
    "openvino": (("openvino", "openvino"),),
    "saved_model": (),
}
#: Every format is written under TensorFlow.
TENSORFLOW = ("tensorflow", "tensorflow-cpu")
#: OpenVINO compile options that keep the CPU plugin in float32.
OPENVINO_CONFIG = {"INFERENCE_PRECISION_HINT": "f32"}
EXTRA = "softvq-keras[export]"


class ExportError(RuntimeError):
    """A format that cannot be written or run; one line."""


def parse_formats(text):
    """`"onnx,litert"` / `"all"` -> the formats in `FORMATS` order; `ValueError` else."""
    names = [n.strip().lower() for n in str(text).split(",") if n.strip()]
    if not names:
        raise ValueError("no format given")
    if "all" in names:
        return FORMATS
    unknown = [n for n in names if n not in FORMATS]
    if unknown:
        raise ValueError(f"unknown export format {unknown[0]!r}; choose from "
                         f"{', '.join(FORMATS)} or all (comma-separated)")
    return tuple(f for f in FORMATS if f in names)


def missing_packages(formats):
    """pip names of the packages `formats` need that cannot be imported here."""
    needed = [TENSORFLOW] + [m for f in formats for m in MODULES[f]]
    missing = []
    for module, package in needed:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a module set to None, or a broken one
            found = False
        if not found and package not in missing:
            missing.append(package)
    return missing


def pip_command(missing):
    """The one command that installs `missing`."""
    return (f"pip install '{EXTRA}' (or: pip install {' '.join(missing)})")


def versions(formats):
    """{package: version} of the runtimes and converters used."""
    names = ["tensorflow", "keras"] + [p for f in formats for _, p in MODULES[f]]
    found = {}
    for name in dict.fromkeys(names):
        for candidate in (name, "tensorflow-cpu") if name == "tensorflow" else (name,):
            try:
                found[name] = importlib.metadata.version(candidate)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return found


def files_of(fmt, name):
    """The file names one model takes in `fmt` (the first is the one to load)."""
    if fmt == "onnx":
        return [f"{name}.onnx"]
    if fmt == "litert":
        return [f"{name}.tflite"]
    if fmt == "openvino":
        return [f"{name}.xml", f"{name}.bin"]
    raise ValueError(fmt)


def write(fmt, model, folder, name):
    """Write `model` (a called Keras model, TensorFlow backend) as `fmt` into
    `folder`; returns the file names written."""
    files = files_of(fmt, name)
    path = os.path.join(folder, files[0])
    model.export(path, format=fmt, verbose=False)
    return files


def write_saved_model(models, path):
    """One SavedModel at `path` with an endpoint per `{endpoint: model}`
    (`serve`: the encoder, `classify`: the softmax head), each with a `None`
    batch dimension."""
    import keras
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    for endpoint, model in models.items():
        archive.track(model)
        spec = tf.TensorSpec((None,) + tuple(model.input_shape[1:]), tf.float32,
                             name=getattr(model.inputs[0], "name", None))
        archive.add_endpoint(endpoint, _inference(model), input_signature=[spec])
    archive.write_out(str(path), verbose=False)


def _inference(model):
    return lambda x: model(x, training=False)


def runner(fmt, path, endpoint=None):
    """`f(x) -> np.ndarray`: the file at `path` loaded in `fmt`'s own runtime.

    `endpoint` names the SavedModel endpoint (`serve`, `classify`).
    """
    import numpy as np

    path = str(path)
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: np.asarray(x, np.float32)})[0]
    if fmt == "litert":
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=path)
        entry = interpreter.get_input_details()[0]
        out = interpreter.get_output_details()[0]["index"]
        state = {"shape": None}

        def run_litert(x):
            x = np.asarray(x, np.float32)
            if state["shape"] != x.shape:  # a fixed input shape until resized
                interpreter.resize_tensor_input(entry["index"], list(x.shape))
                interpreter.allocate_tensors()
                state["shape"] = x.shape
            interpreter.set_tensor(entry["index"], x)
            interpreter.invoke()
            return interpreter.get_tensor(out).copy()

        return run_litert
    if fmt == "openvino":
        import openvino

        compiled = openvino.Core().compile_model(path, "CPU", OPENVINO_CONFIG)
        output = compiled.output(0)
        return lambda x: np.asarray(compiled(np.asarray(x, np.float32))[output])
    if fmt == "saved_model":
        import tensorflow as tf

        loaded = tf.saved_model.load(path)
        name = endpoint or "serve"
        # Keep `loaded` referenced: its variables die with it.
        return lambda x: getattr(loaded, name)(tf.constant(np.asarray(x, np.float32))).numpy()
    raise ValueError(fmt)

"""Classify and cluster images with a run's ONNX export: onnxruntime, NumPy and Pillow only.

    python -m training.export RUN_DIR --format onnx          # once, where Keras is
    python examples/embed_onnx.py RUN_DIR/export digit.png [more.png ...] [--json]

An app that embeds the encoder needs no Keras, TensorFlow, JAX or PyTorch:
`export/manifest.json` says how to scale the pixels and holds the K-means
centroids and class names; `encoder.onnx` maps the scaled images to latents
and `classifier.onnx` the latents to class probabilities. The answers are
the service's: `/classify_png` (label, name, probabilities) and `/cluster_png`
(nearest centroid, its label, the Euclidean distance). `--json` prints them
in the service's JSON fields, one list entry per image.

Images are 8-bit PNG or JPEG files of the run's size, converted as the service
converts uploads: greyscale runs take luminance, colour runs RGB, and the
0-255 values are mapped to the dataset's range (`value / 255 * pixel_max`)
before the training scaling `raw / pixel_max + offset`. Other input stops
with one line naming the file (exit code 2). `examples/embed_litert.py`
reuses everything here but the runtime.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np


class InputError(ValueError):
    """A file the app refuses; the message names it and says why."""


def load_manifest(export_dir):
    """`export/manifest.json` as a dict, or `InputError`."""
    path = Path(export_dir) / "manifest.json"
    if not path.is_file():
        raise InputError(f"{path} does not exist: give the export/ folder that "
                         "python -m training.export wrote")
    return json.loads(path.read_text(encoding="utf-8"))


def model_file(manifest, export_dir, fmt, name):
    """Path of model `name` ("encoder", "classifier") in format `fmt`, or `InputError`."""
    entry = manifest.get("formats", {}).get(fmt)
    if entry is None or name not in entry.get("models", {}):
        raise InputError(f"{export_dir} has no {fmt} {name}: export it with "
                         f"python -m training.export RUN_DIR --format {fmt}")
    return Path(export_dir) / entry["models"][name]


def read_image(path, manifest):
    """The scaled float32 input `(1,) + input shape` of one PNG / JPEG file."""
    from PIL import Image, UnidentifiedImageError

    spec = manifest["input"]
    height, width = spec["image_shape"][:2]
    try:
        with Image.open(path) as image:
            if image.size != (width, height):
                raise InputError(f"{path}: the image is {image.size[0]}x{image.size[1]} "
                                 f"pixels, this run takes {width}x{height} (resize it first)")
            pixels = np.asarray(image.convert("RGB" if spec["channels"] == 3 else "L"),
                                dtype=np.float64)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        if isinstance(e, InputError):
            raise
        raise InputError(f"{path}: not a readable PNG or JPEG image ({e})") from None
    raw = pixels / 255.0 * spec["pixel_max"]  # the dataset's range, as the service maps it
    x = raw.astype(np.float32).reshape([1] + spec["shape"][1:])
    return x / np.float32(spec["pixel_max"]) + np.float32(spec["offset"])


def answers(latents, probabilities, manifest):
    """The service's answers: `{"classify": {...}, "cluster": {...}}` per image."""
    kmeans = manifest["kmeans"]
    centroids = np.asarray(kmeans["centroids"], np.float64)
    diff = np.asarray(latents, np.float64)[:, None, :] - centroids[None]
    distances = np.sqrt(np.einsum("nkd,nkd->nk", diff, diff))
    clusters = distances.argmin(axis=1)
    found = []
    for i, cluster in enumerate(clusters):
        cluster_answer = {"clusters": [int(cluster)]}
        if kmeans.get("cluster_to_label") is not None:
            cluster_answer["labels"] = [int(kmeans["cluster_to_label"][cluster])]
        cluster_answer["distances"] = [float(distances[i, cluster])]
        answer = {"cluster": cluster_answer}
        if probabilities is not None:
            label = int(np.argmax(probabilities[i]))
            answer["classify"] = {"labels": [label],
                                  "names": [manifest["class_names"][label]],
                                  "probabilities": [probabilities[i].tolist()]}
        found.append(answer)
    return found


def onnx_model(path):
    """`f(x) -> np.ndarray` running one ONNX file in onnxruntime on the CPU."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def main(argv=None, fmt="onnx", load=onnx_model, description=__doc__.splitlines()[0]):
    """Entry point (also of embed_litert.py, with its `fmt` and `load`)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("export_dir", help="RUN_DIR/export, written by python -m training.export")
    parser.add_argument("images", nargs="+", help="PNG or JPEG files of the run's image size")
    parser.add_argument("--json", action="store_true",
                        help="print the answers as JSON, in the service's fields")
    args = parser.parse_args(argv)
    try:  # every input is checked before a model is loaded
        manifest = load_manifest(args.export_dir)
        encoder_path = model_file(manifest, args.export_dir, fmt, "encoder")
        classifier_path = (model_file(manifest, args.export_dir, fmt, "classifier")
                           if manifest["labelled"] else None)
        x = np.concatenate([read_image(path, manifest) for path in args.images])
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    latents = load(encoder_path)(x)
    probabilities = None if classifier_path is None else load(classifier_path)(latents)
    found = answers(latents, probabilities, manifest)
    if args.json:
        print(json.dumps(found))
        return 0
    for path, answer in zip(args.images, found):
        cluster = answer["cluster"]
        text = f"{path}: cluster {cluster['clusters'][0]}"
        if "labels" in cluster:
            text += f" (label {cluster['labels'][0]})"
        text += f" at distance {cluster['distances'][0]:.4f}"
        if "classify" in answer:
            label = answer["classify"]["labels"][0]
            p = answer["classify"]["probabilities"][0][label]
            text += f"; class {answer['classify']['names'][0]!r} (p = {p:.3f})"
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

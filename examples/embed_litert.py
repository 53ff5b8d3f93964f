"""Classify and cluster images with a run's LiteRT export: ai-edge-litert, NumPy and Pillow only.

    python -m training.export RUN_DIR --format litert        # once, where Keras is
    python examples/embed_litert.py RUN_DIR/export digit.png [more.png ...] [--json]

The same program as examples/embed_onnx.py (whose manifest reading, image
scaling and answers it reuses) with `encoder.tflite` and `classifier.tflite`
run by LiteRT's interpreter, the runtime of phones and small boards. A LiteRT
model has a fixed input shape until `resize_tensor_input` and
`allocate_tensors` are called for the batch at hand, as `litert_model` does.
"""

import sys

import numpy as np

from embed_onnx import main as embed_main


def litert_model(path):
    """`f(x) -> np.ndarray` running one `.tflite` file in LiteRT's interpreter."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    entry = interpreter.get_input_details()[0]
    output = interpreter.get_output_details()[0]

    def run(x):
        x = np.asarray(x, np.float32)
        interpreter.resize_tensor_input(entry["index"], list(x.shape))
        interpreter.allocate_tensors()
        interpreter.set_tensor(entry["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(output["index"]).copy()

    return run


def main(argv=None):
    return embed_main(argv, fmt="litert", load=litert_model,
                      description=__doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())

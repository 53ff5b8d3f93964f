"""The package imports lazily: its Keras-free parts load without any backend."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import softvq_keras

REPO_ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("keras", "tensorflow", "jax", "torch")


def python(code):
    """Run `code` in a fresh interpreter (this environment) and return its stdout as JSON."""
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_presets_import_without_keras_or_a_backend():
    found = python(
        "import json, sys\n"
        "import softvq_keras\n"
        "from softvq_keras import presets\n"
        "from softvq_keras.presets import MODEL_NAMES\n"
        "print(json.dumps({'loaded': [m for m in %r if m in sys.modules],\n"
        "                  'models': list(MODEL_NAMES),\n"
        "                  'mnist_steps': softvq_keras.preset('mnist')['steps'],\n"
        "                  'version': softvq_keras.__version__}))" % (HEAVY,)
    )
    assert found["loaded"] == []
    assert found["models"] == list(softvq_keras.BOTTLENECKS)
    assert found["mnist_steps"] == softvq_keras.PRESETS["mnist"]["steps"]
    assert found["version"] == softvq_keras.__version__


def test_public_names_resolve_to_their_modules_and_are_listed():
    from softvq_keras import autoencoder, layers, registry

    assert softvq_keras.SoftVectorQuantizer is layers.SoftVectorQuantizer
    assert softvq_keras.VectorQuantizer is layers.VectorQuantizer
    assert softvq_keras.Autoencoder is autoencoder.Autoencoder
    assert softvq_keras.make_bottleneck is registry.make_bottleneck
    assert set(softvq_keras.__all__) <= set(dir(softvq_keras))
    assert {"SoftVectorQuantizer", "build_autoencoder", "BOTTLENECKS"} <= set(softvq_keras.__all__)
    namespace = {}
    exec("from softvq_keras import *", namespace)
    assert namespace["SoftVectorQuantizer"] is layers.SoftVectorQuantizer
    with pytest.raises(AttributeError, match="has no attribute 'SoftVQ'"):
        softvq_keras.SoftVQ  # noqa: B018


def test_custom_objects_are_registered_once_a_keras_part_is_used():
    """After Keras, `import softvq_keras` registers at once; before it, on first use."""
    found = python(
        "import json\n"
        "import softvq_keras.presets\n"
        "import keras\n"
        "get = keras.saving.get_registered_object\n"
        "before = get('softvq>SoftVectorQuantizer') is not None\n"
        "softvq_keras.build_autoencoder\n"
        "after = [get(f'softvq>{n}') is not None for n in ('SoftVectorQuantizer', 'Autoencoder', 'CodebookUsage')]\n"
        "print(json.dumps([before, after]))"
    )
    assert found == [False, [True, True, True]]
    found = python(
        "import json, keras, softvq_keras\n"
        "print(json.dumps(keras.saving.get_registered_object('softvq>VectorQuantizer') is not None))"
    )
    assert found is True

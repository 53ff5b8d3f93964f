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
    from softvq_keras import layers, models, registry
    from softvq_keras.models import autoencoder, subpixel

    assert softvq_keras.SoftVectorQuantizer is layers.SoftVectorQuantizer
    assert softvq_keras.VectorQuantizer is layers.VectorQuantizer
    assert softvq_keras.Autoencoder is autoencoder.Autoencoder is models.Autoencoder
    assert softvq_keras.build_autoencoder is models.build_autoencoder
    assert softvq_keras.SubPixelConv2DTranspose is subpixel.SubPixelConv2DTranspose
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


def test_no_softvq_module_imports_tensorflow_bentoml_or_tfds_at_import_time():
    """Core install: every module of the library imports without the `train` / `serve` extras."""
    if keras_backend_name() == "tensorflow":
        pytest.skip("the TensorFlow backend imports TensorFlow itself")
    found = python(
        "import json, pkgutil, importlib, sys\n"
        "import softvq_keras\n"
        "names = sorted(m.name for m in pkgutil.walk_packages(softvq_keras.__path__, 'softvq_keras.'))\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps({'modules': names, 'loaded': [m for m in\n"
        "    ('tensorflow', 'tensorflow_datasets', 'bentoml') if m in sys.modules]}))"
    )
    assert "softvq_keras.data.tfds" in found["modules"]
    assert "softvq_keras.layers.soft_vector_quantizer" in found["modules"]
    assert found["loaded"] == []


def test_missing_optional_dependency_names_the_extra():
    from softvq_keras.optional import MissingDependencyError, import_optional

    with pytest.raises(MissingDependencyError) as info:
        import_optional("softvq_no_such_module", "train", "reading image files")
    assert str(info.value) == (
        "reading image files needs softvq_no_such_module, which is not installed: "
        "pip install 'softvq-keras[train]'"
    )
    assert isinstance(info.value, ImportError)
    assert import_optional("json", "train", "x") is json


def test_tf_data_and_image_reading_without_tensorflow_or_pillow_name_the_train_extra():
    """With TensorFlow and Pillow absent (None in sys.modules), the message names the extra."""
    if keras_backend_name() == "tensorflow":
        pytest.skip("the TensorFlow backend needs TensorFlow")
    found = python(
        "import json, sys\n"
        "sys.modules['tensorflow'] = None; sys.modules['PIL'] = None\n"
        "from softvq_keras.data import images, availability\n"
        "out = []\n"
        "for f in (availability.import_tensorflow, lambda: images.to_pil([[0]])):\n"
        "    try:\n"
        "        f(); out.append('imported')\n"
        "    except ImportError as e:\n"
        "        out.append(str(e))\n"
        "print(json.dumps(out))"
    )
    assert found == [
        "a tf.data input pipeline needs tensorflow-cpu, which is not installed: "
        "pip install 'softvq-keras[train]'",
        "reading image files needs pillow, which is not installed: pip install 'softvq-keras[train]'",
    ]


def keras_backend_name():
    import os

    return os.environ.get("KERAS_BACKEND", "tensorflow")

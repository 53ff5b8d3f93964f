"""The Bento's Python packages (bentofile.yaml) are what the service imports, no more.

A fresh interpreter builds the service in process on the digits run, answers
a JSON batch, a PNG upload and a reconstruction, and lists the installed
distributions its imported modules come from. Every one of them must be a
package bentofile.yaml names or a dependency of one (so the container built
from the Bento has it), and every package named there must be imported (so
the image carries nothing the service does not use: no TensorFlow,
tensorflow-datasets, torch, scikit-learn or training extras).
tests/serving/test_store.py checks that the built Bento's requirements.txt
and Dockerfile carry these packages.
"""

import json
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
#: Never in the serving image: the training side and the other backends.
NOT_SERVED = {"tensorflow", "tensorflow-cpu", "tensorflow-datasets", "torch", "scikit-learn",
              "matplotlib", "pandas", "tf-keras"}

PROBE = r"""
import json, sys
from importlib import metadata
import numpy as np
from serving.service import SoftVQService
from serving_helpers import png_bytes

service = SoftVQService.inner()
images = np.zeros((2, 8, 8)).tolist()
x = service._from_json(images)
service.model.predict(x)
service.reconstructor.decode(x)
import pathlib, tempfile
upload = pathlib.Path(tempfile.mkdtemp()) / "digit.png"  # as /encode_png receives it
upload.write_bytes(png_bytes(np.zeros((8, 8))))
service.model.predict(service._from_png(upload))
service.warming.join()
owners = metadata.packages_distributions()
found = set()
for name in list(sys.modules):
    top = name.partition(".")[0]
    for dist in owners.get(top, ()):
        found.add(dist)
print("DISTS " + json.dumps(sorted(found)))
"""


def _bentofile_packages():
    bentofile = yaml.safe_load((REPO_ROOT / "bentofile.yaml").read_text())
    return [Requirement(p) for p in bentofile["python"]["packages"]]


def _closure(requirements):
    """Canonical names of `requirements` and, recursively, of their installed dependencies."""
    seen, todo = set(), [(r, tuple(r.extras)) for r in requirements]
    while todo:
        requirement, extras = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(requirement.name) or []
        except metadata.PackageNotFoundError:
            continue  # an optional dependency not installed here
        for line in requires:
            child = Requirement(line)
            if child.marker is not None and not any(
                    child.marker.evaluate({"extra": extra}) for extra in extras + ("",)):
                continue
            todo.append((child, tuple(child.extras)))
    return seen


def test_bentofile_packages_are_what_the_service_imports(digits_run, python_subprocess):
    proc = python_subprocess(PROBE, backend="jax", env={
        "SOFTVQ_RUN_DIR": str(digits_run), "BENTOML_DO_NOT_TRACK": "True",
        "PYTHONPATH": f"{REPO_ROOT}:{REPO_ROOT / 'tests' / 'serving'}"})
    (line,) = [x for x in proc.stdout.splitlines() if x.startswith("DISTS ")]
    imported = {canonicalize_name(d) for d in json.loads(line[len("DISTS "):])}
    packages = _bentofile_packages()
    named = {canonicalize_name(r.name) for r in packages}
    assert named == {"bentoml", "keras", "jax", "numpy", "pillow"}
    assert "jax" in [r.name for r in packages if "cpu" in r.extras]  # jaxlib comes with it
    # Everything imported reaches the image (named, or a dependency of a named package).
    covered = _closure(packages)
    assert imported - covered == set(), f"imported but not packed: {imported - covered}"
    # Every named package is used, and none of the training side is imported or packed.
    assert named <= imported, f"packed but never imported: {named - imported}"
    assert not NOT_SERVED & imported, NOT_SERVED & imported
    assert not NOT_SERVED & covered, NOT_SERVED & covered
    # The installed versions satisfy the pins.
    for requirement in packages:
        version = metadata.version(requirement.name)
        assert requirement.specifier.contains(version, prereleases=True), (requirement, version)

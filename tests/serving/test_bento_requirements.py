"""The Bento's Python packages (bentofile.yaml) are what the service imports, no more.

A fresh interpreter plays the container: every installed distribution that
is neither a package bentofile.yaml names nor a dependency of one is hidden
(importing it raises ModuleNotFoundError, as in an image without it). There
the service is built in process on the digits run and answers a JSON batch,
a PNG upload and a reconstruction, so its requirements suffice; and every
package named in bentofile.yaml must have been imported, so the image carries
nothing the service does not use (no TensorFlow, tensorflow-datasets, torch,
scikit-learn or training extras). tests/serving/test_store.py checks that the
built Bento's requirements.txt and Dockerfile carry these packages.
"""

import json
import os
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
#: The Bento's own source (bentofile.yaml `include`), installed here in editable mode.
OWN = {"softvq-keras"}

PROBE = r"""
import json, os, re, sys
from importlib import metadata

allowed = set(json.loads(os.environ["SOFTVQ_ALLOWED_DISTS"]))
owners = metadata.packages_distributions()
canonical = lambda name: re.sub(r"[-_.]+", "-", name).lower()
before = set(sys.modules)  # the interpreter's own start-up (site, .pth files)
hidden = set()


class NotInTheImage:
    def find_spec(self, fullname, path=None, target=None):
        top = fullname.partition(".")[0]
        dists = owners.get(top)
        if dists and not any(canonical(d) in allowed for d in dists):
            hidden.add(top)
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


sys.meta_path.insert(0, NotInTheImage())

import pathlib, tempfile
import numpy as np
from serving.service import SoftVQService
from serving_helpers import png_bytes

service = SoftVQService.inner()
x = service._from_json(np.zeros((2, 8, 8)).tolist())
latents, _ = service.model.predict(x)
assert latents.shape == (2, 16)
assert service.reconstructor.decode(x).shape == (2, 64)
upload = pathlib.Path(tempfile.mkdtemp()) / "digit.png"  # as /encode_png receives it
upload.write_bytes(png_bytes(np.zeros((8, 8))))
assert service.model.predict(service._from_png(upload))[0].shape == (1, 16)
service.warming.join()
found = set()
for name in set(sys.modules) - before:
    found.update(canonical(d) for d in owners.get(name.partition(".")[0], ()))
print("DISTS " + json.dumps(sorted(found)))
print("HIDDEN " + json.dumps(sorted(hidden)))
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
    packages = _bentofile_packages()
    named = {canonicalize_name(r.name) for r in packages}
    assert named == {"bentoml", "keras", "jax", "numpy", "pillow"}
    assert "jax" in [r.name for r in packages if "cpu" in r.extras]  # jaxlib comes with it
    image = _closure(packages)  # what `pip install -r requirements.txt` brings
    assert not NOT_SERVED & image, NOT_SERVED & image
    for requirement in packages:  # the installed versions satisfy the pins
        version = metadata.version(requirement.name)
        assert requirement.specifier.contains(version, prereleases=True), (requirement, version)

    # The service works with only those (the probe fails on any hidden import it needs) ...
    proc = python_subprocess(PROBE, backend="jax", env={
        "SOFTVQ_RUN_DIR": str(digits_run), "BENTOML_DO_NOT_TRACK": "True",
        "SOFTVQ_ALLOWED_DISTS": json.dumps(sorted(image | OWN)),
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "tests" / "serving")])})
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines()
                 if line.startswith(("DISTS ", "HIDDEN ")))
    imported = set(json.loads(lines["DISTS"]))
    assert imported <= image | OWN
    # ... and uses every package named: the image carries nothing the service does not use.
    assert named <= imported, f"packed but never imported: {named - imported}"
    assert not NOT_SERVED & imported

"""The check of `python -m training.export`: an export must give its `.keras` models' answers.

`Reference` holds the `.keras` models' latents, probabilities, classes, clusters and
reconstructions on the check images; `compare` runs a format's models on the same
images (in batches of 256 and of 1) and raises `MismatchError`, naming the format,
the file and the difference, when a value is more than `TOLERANCE` away or a
predicted class differs.
"""

import numpy as np

from training.export_formats import files_of

#: Largest difference allowed between an export and its `.keras` model.
TOLERANCE = 1e-4
#: Test images every export is checked on (all of the split when it has fewer).
CHECK_IMAGES = 256


class MismatchError(RuntimeError):
    """An export that does not give its `.keras` model's answers; exit 3."""


def nearest(latents, centroids):
    z = np.asarray(latents, np.float64)
    diff = z[:, None, :] - np.asarray(centroids, np.float64)[None]
    return np.argmin(np.einsum("nkd,nkd->nk", diff, diff), axis=1)


class Reference:
    """The `.keras` models' answers on the check images."""

    def __init__(self, models, x, centroids):
        self.x = x
        self.latents = np.asarray(models["encoder"].predict(x, verbose=0))
        self.clusters = nearest(self.latents, centroids)
        self.probabilities = self.classes = self.reconstruction = None
        if "classifier" in models:
            self.probabilities = np.asarray(models["classifier"].predict(self.latents,
                                                                         verbose=0))
            self.classes = self.probabilities.argmax(axis=1)
        if "autoencoder" in models:
            self.reconstruction = np.asarray(models["autoencoder"].predict(x, verbose=0))


def _max_diff(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def compare(fmt, run, ref, centroids, tolerance=TOLERANCE):
    """Run a format's models (`run[name](x)`) on the check images.

    Returns {name: measured differences}; raises `MismatchError` naming the
    format and the difference when one exceeds `tolerance` or a class differs.
    """
    x, n = ref.x, len(ref.x)
    files = {name: files_of(fmt, name)[0] if fmt != "saved_model" else
             f"saved_model ({'serve' if name == 'encoder' else 'classify'})" for name in run}
    latents = run["encoder"](x)
    single = np.concatenate([run["encoder"](x[i:i + 1]) for i in range(min(n, 8))])
    found = {"encoder": {"max_abs_diff": max(_max_diff(latents, ref.latents),
                                             _max_diff(single, ref.latents[:len(single)])),
                         "compared": "latents"}}
    problems = []
    if found["encoder"]["max_abs_diff"] > tolerance:
        problems.append(f"{files['encoder']} latents differ from encoder.keras by up to "
                        f"{found['encoder']['max_abs_diff']:.3g} (> {tolerance:g})")
    found["encoder"]["same_clusters"] = int((nearest(latents, centroids) == ref.clusters).sum())
    if "classifier" in run:
        probabilities = run["classifier"](ref.latents)
        classes = np.asarray(run["classifier"](latents)).argmax(axis=1)
        same = int((classes == ref.classes).sum())
        found["classifier"] = {"max_abs_diff": _max_diff(probabilities, ref.probabilities),
                               "compared": "probabilities", "same_classes": same}
        if found["classifier"]["max_abs_diff"] > tolerance:
            problems.append(f"{files['classifier']} probabilities differ from "
                            f"classifier.keras by up to "
                            f"{found['classifier']['max_abs_diff']:.3g} (> {tolerance:g})")
        if same != n:
            problems.append(f"{n - same} of {n} predicted classes differ from the .keras "
                            "models'")
    if "autoencoder" in run:
        found["autoencoder"] = {"max_abs_diff": _max_diff(run["autoencoder"](x),
                                                          ref.reconstruction),
                                "compared": "reconstructions"}
        if found["autoencoder"]["max_abs_diff"] > tolerance:
            problems.append(f"{files['autoencoder']} reconstructions differ from "
                            f"autoencoder.keras by up to "
                            f"{found['autoencoder']['max_abs_diff']:.3g} (> {tolerance:g})")
    if problems:
        raise MismatchError(f"{fmt}: " + "; ".join(problems) + f" on {n} test images; "
                            "nothing was written to export/")
    return found

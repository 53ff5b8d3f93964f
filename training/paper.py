"""The paper's published Table 1 / 2 numbers and notes on our copies of the data."""

from training import artifacts

#: The paper's numbers (fractions; NMI is not published for SVHN / CIFAR-10).
PAPER = {
    "mnist": {
        "raw": (0.5517, 0.5008, 0.9244),
        "ae": (0.5261, 0.5301, 0.9191),
        "vae": (0.5644, 0.5600, 0.8910),
        "betavae": (0.7381, 0.5760, 0.9110),
        "infodropout": (0.5852, 0.4979, 0.9111),
        "vq": (0.5148, 0.3541, 0.8162),
        "softvq": (0.7764, 0.7188, 0.9354),
    },
    "svhn": {
        "ae": (0.1196, None, 0.2595),
        "vae": (0.1358, None, 0.2642),
        "betavae": (0.1454, None, 0.4962),
        "infodropout": (0.1275, None, 0.2446),
        "vq": (0.1296, None, 0.3157),
        "softvq": (0.1768, None, 0.5048),
    },
    "cifar10": {
        "ae": (0.2173, None, 0.4092),
        "vae": (0.2412, None, 0.3883),
        "betavae": (0.2280, None, 0.3691),
        "infodropout": (0.2196, None, 0.3989),
        "vq": (0.2030, None, 0.3351),
        "softvq": (0.2383, None, 0.4454),
    },
}

#: Notes on known local copies of the data, by the SHA-256 of the `.npz` file: a
#: table trained on one of them says so under its heading (`data_note`).
DATA_NOTES = {
    "c85dde7ee140815586d82495210631a228a9b561c31cd76ca8321d859e43ab04": (
        "The CIFAR-10 copy of these runs was decoded from JPEG (quality 75, 4:2:0): "
        "comparable to, not identical with, the original pixels."
    ),
}


def data_note(source):
    """The `DATA_NOTES` entry of the data file `source` (a path), or None (not a
    file, or not a copy with a note: e.g. CIFAR-10 as tensorflow-datasets gives it)."""
    from pathlib import Path

    path = Path(source or "")
    if not source or not path.is_file() or path.suffix != ".npz":
        return None
    return DATA_NOTES.get(artifacts.file_sha256(path))

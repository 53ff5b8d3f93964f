"""Pictures for the results tables (matplotlib, Agg backend, small PNGs).

Every function takes plain numpy arrays and a path and writes one PNG atomically.
"""

import os
from pathlib import Path

import numpy as np


def _figure(*args, **kwargs):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, plt.subplots(*args, **kwargs)


def _save(plt, fig, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=80, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
    return path


def _as_image(x, image_shape, offset):
    x = np.asarray(x, dtype=np.float32).reshape(image_shape) - offset
    return np.clip(x, 0.0, 1.0)


def one_per_class(labels, count, n=10):
    """Indices of at most `n` of `count` pictures: the first example of each
    class in class order (a test split stored by class would otherwise show
    one class), then the next unused examples; the first `n` without labels."""
    if labels is None:
        return np.arange(min(n, count))
    labels = np.asarray(labels)[:count]
    firsts = [int(np.flatnonzero(labels == c)[0]) for c in np.unique(labels)][:n]
    taken = set(firsts)
    rest = [i for i in range(len(labels)) if i not in taken][: n - len(firsts)]
    return np.asarray(firsts + rest, dtype=int)


def reconstructions(originals, recon_by_model, image_shape, path, offset=0.0, titles=None):
    """A grid: test images on top, each model's reconstructions below.

    `originals`: `(n, ...)` scaled inputs; `recon_by_model`: name -> `(n, ...)`;
    `titles`: an optional caption per column (e.g. the class names).
    """
    rows = ["input", *recon_by_model]
    n = len(originals)
    plt, (fig, axes) = _figure(len(rows), n, figsize=(0.8 * n, 0.85 * len(rows)))
    axes = np.atleast_2d(axes)
    cmap = "gray" if len(image_shape) == 2 else None
    for r, name in enumerate(rows):
        images = originals if name == "input" else recon_by_model[name]
        for c in range(n):
            ax = axes[r, c]
            ax.imshow(_as_image(images[c], image_shape, offset), cmap=cmap, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
            if r == 0 and titles is not None:
                ax.set_title(str(titles[c]), fontsize=7)
    return _save(plt, fig, path)


def latent_maps(latents_by_model, labels, path, max_points=3000, seed=0, class_names=None):
    """2-D PCA of each model's test latents, coloured by the true label
    (`class_names` label the colour bar)."""
    from sklearn.decomposition import PCA

    names = list(latents_by_model)
    cols = min(4, len(names))
    rows = -(-len(names) // cols)
    plt, (fig, axes) = _figure(rows, cols, figsize=(3.2 * cols, 3.0 * rows))
    axes = np.atleast_1d(axes).reshape(-1)
    pick = np.random.default_rng(seed).permutation(len(labels))[:max_points]
    labels = np.asarray(labels)
    classes = len(class_names) if class_names is not None else int(labels.max()) + 1
    cmap = "tab10" if classes <= 10 else "tab20" if classes <= 20 else "viridis"
    for ax, name in zip(axes, names):
        xy = PCA(2, random_state=seed).fit_transform(np.asarray(latents_by_model[name])[pick])
        sc = ax.scatter(xy[:, 0], xy[:, 1], c=labels[pick], cmap=cmap,
                        s=2, vmin=-0.5, vmax=classes - 0.5)
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[len(names):]:
        ax.axis("off")
    ticks = range(classes) if classes <= 20 else None
    bar = fig.colorbar(sc, ax=axes.tolist(), ticks=ticks, shrink=0.8, label="label")
    if class_names is not None and ticks is not None:
        bar.set_ticklabels([str(c) for c in class_names])
    return _save(plt, fig, path)


def codebook_usage(code_probs, path, title="soft VQ codebook usage (test split)"):
    """Bar chart of how often each codeword is the most probable, sorted."""
    probs = np.asarray(code_probs)
    counts = np.bincount(np.argmax(probs, axis=-1), minlength=probs.shape[-1])
    order = np.sort(counts)[::-1]
    used = int((counts > 0).sum())
    plt, (fig, ax) = _figure(figsize=(6, 2.6))
    ax.bar(np.arange(len(order)), order, width=1.0)
    ax.set_xlabel(f"codeword (sorted); {used}/{len(counts)} used")
    ax.set_ylabel("test inputs")
    ax.set_title(title, fontsize=9)
    return _save(plt, fig, path)


def metric_bars(rows, path, metrics=("clustering_accuracy", "nmi", "classification_accuracy")):
    """Grouped bars per metric: our mean (with std) beside the paper's number.

    `rows`: list of dicts with `name`, and per metric `mean`, `std`, `paper` under
    `row[metric]` (the paper's value may be None).
    """
    plt, (fig, axes) = _figure(1, len(metrics), figsize=(4.2 * len(metrics), 3.0))
    axes = np.atleast_1d(axes)
    x = np.arange(len(rows))
    for ax, metric in zip(axes, metrics):
        ours = [r[metric]["mean"] for r in rows]
        err = [r[metric]["std"] for r in rows]
        paper = [np.nan if r[metric]["paper"] is None else r[metric]["paper"] for r in rows]
        ax.bar(x - 0.2, ours, 0.4, yerr=err, label="ours")
        ax.bar(x + 0.2, paper, 0.4, label="paper", alpha=0.6)
        ax.set_xticks(x)
        ax.set_xticklabels([r["name"] for r in rows], rotation=45, ha="right", fontsize=8)
        ax.set_title(metric, fontsize=9)
        ax.set_ylim(0, 1)
    axes[0].legend(fontsize=8)
    return _save(plt, fig, path)

"""The pictures of `training.table`: reconstructions, latent maps and soft VQ's codebook use."""

from pathlib import Path

from training import artifacts
from training.ledger import finished, run_folder
from training.settings import run_name

#: Test images the pictures are drawn from, at most (all of MNIST's).
PICTURE_SAMPLE = 10_000


def pictured_runs(args):
    """`{model: seed}`: each paper row's lowest seed whose run folder is on this
    machine and finished (a row trained elsewhere, known from its ledger entry
    only, is not drawn)."""
    runs = {}
    for model in args.models:
        for seed in range(args.seeds):
            if finished(run_folder(args.out, args.dataset, model, seed)):
                runs[model] = seed
                break
    return runs


def pictures(dataset, runs, data, args):
    """The PNGs of the runs `runs` (`{model: seed}`, see `pictured_runs`; `data`: a
    `training.data.RunData`), on the same test images: those of the lowest seed
    drawn."""
    if not runs:
        print("[table] no finished run folder on this machine: no reconstructions or "
              "latent maps drawn", flush=True)
        return []
    import keras

    from softvq_keras import Autoencoder  # noqa: F401  imports (registers) the custom layers
    from training import plots

    info = data.info
    name = run_name(dataset)
    out = Path(args.out)
    seed = min(runs.values())
    x_test, y_test, _ = data.sample("test", PICTURE_SAMPLE, seed)
    shown = plots.one_per_class(y_test, len(x_test))
    first = x_test[shown]
    names = info.class_names
    titles = None if y_test is None or names is None else [names[y] for y in y_test[shown]]
    recon, latents, written = {}, {}, []
    for model, run_seed in runs.items():
        folder = run_folder(args.out, dataset, model, run_seed)
        autoencoder = keras.saving.load_model(folder / artifacts.AUTOENCODER)
        outputs = autoencoder.predict(x_test, batch_size=2048, verbose=0)
        recon[model] = outputs["reconstruction"][shown]
        latents[model] = outputs["latent"]
        if model == "softvq":
            written.append(plots.codebook_usage(
                outputs["code_probs"], out / f"{name}-codebook.png"))
    written.append(plots.reconstructions(
        first, recon, info.image_shape, out / f"{name}-reconstructions.png",
        offset=info.offset, titles=titles))
    latents = {"raw": x_test.reshape(len(x_test), -1), **latents}
    written.append(plots.latent_maps(latents, y_test, out / f"{name}-latents.png",
                                     class_names=names))
    return written

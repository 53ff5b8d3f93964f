"""The web page at `/ui`: static files from serving/ui/ plus `/ui/config.json`.

`ui_app()` is a small Starlette app the service mounts at `/ui`
(`SoftVQService.mount_asgi_app`). It serves `serving/ui/index.html`,
`app.js` and `style.css` as they are (no build step, no CDN) and
`/ui/config.json`: what the page needs to know about the served run, read
from its config.json (image shape, channels, pixel range, class names,
whether it is labelled, cluster count, headline metrics, which model, whether
`/reconstruct` is available and whether the API routes need a key).
"""

import functools
import math
from pathlib import Path

from serving.run_folder import RunFolderError, read_config
from serving.store import default_run_dir, served_model, stored_tag

UI_DIR = Path(__file__).resolve().parent / "ui"


def run_info(config, source):
    """The JSON `/ui/config.json` answers for a run's config.json."""
    image_shape = [int(n) for n in config["image_shape"]]
    channels = int(config.get("channels") or (image_shape[2] if len(image_shape) == 3 else 1))
    labelled = config.get("labelled", True) is not False
    class_names = config.get("class_names") if labelled else None
    if labelled and not class_names:
        class_names = [str(i) for i in range(int(config.get("num_classes") or 10))]
    metrics = {}
    metrics_path = Path(default_run_dir()) / "metrics.json"
    if metrics_path.is_file():
        import json

        try:
            all_metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            all_metrics = {}
        metrics = {
            k: v for k, v in all_metrics.items()
            if k in ("clustering_accuracy", "nmi", "classification_accuracy",
                     "reconstruction_error", "codebook_usage", "perplexity")
            and isinstance(v, (int, float)) and math.isfinite(v)
        }
    return {
        "source": source,
        "dataset": config.get("dataset"),
        "model": config.get("model"),
        "height": image_shape[0],
        "width": image_shape[1],
        "channels": channels,
        "image_shape": image_shape,
        "pixel_max": float(config["pixel_max"]),
        "labelled": labelled,
        "class_names": class_names,
        "clusters": int(config.get("clusters") or (len(class_names) if class_names else 10)),
        "metrics": metrics,
        "reconstruct": (Path(default_run_dir()) / "autoencoder.keras").is_file(),
        "api_key_required": _keys_required(),
    }


def _keys_required():
    """Whether the API routes need a key (the page then asks for it at once)."""
    from serving.auth import ApiKeyError, load_api_keys

    try:
        return bool(load_api_keys())
    except ApiKeyError:
        return True


@functools.lru_cache(maxsize=1)
def _cached_info():
    model = served_model()
    source = f"model {stored_tag(model)}" if model else f"run folder {default_run_dir().name}"
    return run_info(read_config(default_run_dir()), source)


async def config_view(request):
    from starlette.responses import JSONResponse

    try:
        info = _cached_info()
    except RunFolderError as e:
        return JSONResponse({"error": str(e)}, status_code=503)
    return JSONResponse(info, headers={"Cache-Control": "no-store"})


def ui_app():
    """The Starlette app mounted at `/ui`."""
    from starlette.applications import Starlette
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    return Starlette(routes=[
        Route("/config.json", config_view, methods=["GET"]),
        Mount("/", StaticFiles(directory=str(UI_DIR), html=True), name="static"),
    ])

"""The floor for `benchmarks/serve_latency.py`: the same `/encode` as a bare Starlette app.

    SOFTVQ_RUN_DIR=RUN python -m uvicorn --app-dir benchmarks --factory bare_app:create_app

It does exactly the service's work for `/encode` and nothing else: the same
request checks (`serving.validation.images_from_json`), the same merging of
concurrent requests (`serving.batching.MicroBatcher`) and the same compiled
forward pass (`serving.runtime.RunModel`), behind plain `json.loads` /
`json.dumps`. No BentoML: no middlewares (OpenTelemetry, Prometheus,
concurrency limit, the service's own guards), no pydantic, no routing
through BentoML's API wrapper. BentoML's images/s as a fraction of this app's
is its overhead.
"""

import json
import os

os.environ.setdefault("KERAS_BACKEND", "jax")


def create_app():
    """The Starlette app over `$SOFTVQ_RUN_DIR` (`POST /encode`, `GET /readyz`)."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from serving.batching import MicroBatcher
    from serving.runtime import RunModel
    from serving.store import default_run_dir
    from serving.validation import ImageSpec, InvalidInput, images_from_json

    model = RunModel(default_run_dir())
    spec = ImageSpec.from_config(model.config, 512)
    batcher = MicroBatcher(model.predict, max_batch=256)

    async def encode(request):
        try:
            body = json.loads(await request.body())
            x = images_from_json(body.get("images") if isinstance(body, dict) else None, spec)
        except ValueError as e:  # InvalidInput and JSON errors
            status = e.status if isinstance(e, InvalidInput) else 400
            return JSONResponse({"error": str(e)}, status_code=status)
        latents, _ = await batcher(x)
        return JSONResponse({"latents": latents.tolist()})

    async def readyz(request):
        return Response(status_code=200)

    return Starlette(routes=[Route("/encode", encode, methods=["POST"]),
                             Route("/readyz", readyz)])

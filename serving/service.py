"""BentoML service over one training run: `/encode`, `/cluster`, `/classify`, `/ui`.

    SOFTVQ_RUN_DIR=runs/digits-softvq bentoml serve serving.service:SoftVQService
    SOFTVQ_MODEL=softvq-digits-softvq bentoml serve serving.service:SoftVQService

Routes (POST; see serving/README.md for curl examples):

- `/encode`   `{"images": [...]}` -> `{"latents": [[...], ...]}`
- `/cluster`  `{"images": [...]}` -> `{"clusters": [...], "labels": [...], "distances": [...]}`
- `/classify` `{"images": [...]}` -> `{"labels": [...], "names": [...], "probabilities": [[...], ...]}`
- `/encode_png`, `/cluster_png`, `/classify_png`: the same answers for one PNG
  or JPEG uploaded as the multipart field `image` (`curl -F image=@digit.png`).
- `/reconstruct` `{"images": [...]}` -> `{"images": [...]}`: the autoencoder's
  decoded images in the dataset's pixel range, shaped like the input (404 when
  the run has no autoencoder.keras).
- `/codes` `{"images": [...]}` -> `{"indices": [...], "codes_per_stage": [...]}`:
  the quantizer's code indices per image (a list per image for residual VQ);
  `/decode` `{"indices": [...]}` -> `{"images": [...]}`: those codes through
  the decoder (serving/code_model.py). 404 for a run without a quantizer.
- `GET /ui`: a web page (serving/ui/) to draw or drop an image and see all of
  the above; `GET /ui/config.json` describes the served run.

The run is `SOFTVQ_MODEL=NAME[:VERSION]` from BentoML's model store (saved
with `python -m serving.store RUN_DIR`; the newest version when none is given)
or the folder `SOFTVQ_RUN_DIR`. A worker that cannot load it stops the whole
server with one line instead of being restarted forever (serving/startup.py).

A run trained without labels (config.json `"labelled": false`) answers
`/classify` and `/classify_png` with 404, and `/cluster` without `labels`.
With `SOFTVQ_API_KEYS` or `SOFTVQ_API_KEYS_FILE` set, the API routes need
`Authorization: Bearer <key>` (serving/auth.py).

BentoML adds `/livez`, `/healthz`, `/readyz`, `/metrics` and the OpenAPI page
at `/` (spec at `/docs.json`; `/schema.json`, what BentoML's Python client
reads, is open like it). `/metrics` also carries the model's own series: images
per model call, served clusters and classes per route, and the training
split's shares (serving/metrics.py).

Images are raw pixels as the dataset stores them (0-255, or 0-16 for
`digits`), a batch of 1 to `SOFTVQ_MAX_BATCH` images (default 512), each
shaped like one stored example (28x28), like the encoder input (784) or flat.
Bad input gets 400 (unreadable request: malformed JSON, missing field, not a
PNG), 413 (body over `SOFTVQ_MAX_BODY_BYTES`, default 16 MiB) or 422 (readable
but invalid: shape, rank, empty, ragged, strings, NaN/Inf, range, batch size),
always as `{"error": "<what was wrong; what was expected>"}`.

Settings (environment, read at start-up): `SOFTVQ_MODEL` (a stored run's
tag), `SOFTVQ_RUN_DIR` (default `runs/digits-softvq`), `SOFTVQ_MAX_BATCH` (512), `SOFTVQ_MAX_BODY_BYTES`
(16 MiB), `SOFTVQ_MODEL_BATCH` (256 images merged per model call at most),
`SOFTVQ_WORKERS` (1), `SOFTVQ_ACCESS_LOG` (0), `SOFTVQ_METRICS` (1) and
`KERAS_BACKEND` (default `jax`, the fastest here: serving/README.md has the
measurements).

This module imports neither Keras nor `training/`: `bentoml serve` imports it
in its supervising process too, so Keras is loaded in `__init__` only
(`/reconstruct` imports `softvq_keras` there, for the autoencoder's layers).
"""

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import bentoml
from pydantic import BaseModel, Field, WithJsonSchema
from starlette.responses import JSONResponse

from serving.auth import ApiKeyError, ApiKeyGuard, describe, load_api_keys
from serving.batching import MicroBatcher
from serving.code_model import CodeModel
from serving.codes import CodeLayout, indices_from_json, indices_schema
from serving.fastload import import_keras
from serving.guard import RequestGuard, max_body_bytes
from serving.logs import install_refusal_filter
from serving.metrics import ServedMetrics
from serving.reconstruct import Reconstructor, per_image_shape
from serving.runtime import RunModel
from serving.schema import images_schema, served_config
from serving.startup import (
    Phases, exit_nonzero_after_stop, load_or_stop, warm_up_in_background,
)
from serving.store import default_run_dir, hint_missing_packed_model, served_model, stored_tag
from serving.ui_app import ui_app
from serving.validation import ImageSpec, InvalidInput, image_from_upload, images_from_json

logger = logging.getLogger("bentoml.service.softvq")

# The serving backend, chosen by measurement (serving/README.md); set before
# Keras is first imported (in SoftVQService.__init__). An explicit setting wins.
os.environ.setdefault("KERAS_BACKEND", "jax")

#: Images per request (env `SOFTVQ_MAX_BATCH`).
MAX_BATCH = int(os.environ.get("SOFTVQ_MAX_BATCH", "512"))
#: Most images merged into one model call (env `SOFTVQ_MODEL_BATCH`; 1 turns
#: request merging off). Larger requests still run whole, in 64-image chunks.
MODEL_BATCH = int(os.environ.get("SOFTVQ_MODEL_BATCH", "256"))
#: Concurrent requests one server accepts before answering 429.
MAX_CONCURRENCY = 256
#: Routes whose answers are counted per cluster / per class on `/metrics`.
CLUSTER_ROUTES = ("/cluster", "/cluster_png")
CLASS_ROUTES = ("/classify", "/classify_png")

try:  # a key setting that cannot be used stops the service before it starts
    API_KEYS = load_api_keys()
except ApiKeyError as e:
    print(f"softvq: refusing to start: {e}", file=sys.stderr, flush=True)
    raise SystemExit(2) from None
# `bentoml build` imports this module before it packs bentofile.yaml's models:
# a missing one gets a line saying how to store it (BentoML then refuses).
hint_missing_packed_model()
exit_nonzero_after_stop()  # `bentoml serve` ends with 3 when no worker can load the run

#: config.json of the run to serve, read once here for the OpenAPI schemas.
SERVED_CONFIG = served_config()
#: The `images` field; its OpenAPI schema follows the served run (serving/schema.py).
Images = Annotated[Any, WithJsonSchema(images_schema(SERVED_CONFIG, MAX_BATCH))]
#: The `indices` field of `/decode`, described for the served run's quantizer
#: (any quantizer's form when the run has none: the route then answers 404).
Indices = Annotated[Any, WithJsonSchema(indices_schema(
    CodeLayout.from_config(SERVED_CONFIG, MAX_BATCH), MAX_BATCH))]
#: One uploaded file; BentoML stores it in the request's temporary folder.
#: Required (no default): a `None` default on a file field is what made pydantic
#: print a PydanticJsonSchemaWarning at every start.
PngFile = Annotated[Path, Field(
    description="One 8-bit PNG or a JPEG sized like one image of the run.")]


class EncodeResponse(BaseModel):
    latents: list[list[float]] = Field(description="Pre-quantization latent z per image.")


class ClusterResponse(BaseModel):
    clusters: list[int] = Field(description="Nearest stored K-means centroid per image.")
    labels: Optional[list[int]] = Field(
        default=None,
        description="The class matched to that cluster (Hungarian); absent when the run "
        "was trained without labels.")
    distances: list[float] = Field(description="Euclidean distance to that centroid.")


class ReconstructResponse(BaseModel):
    images: list[Any] = Field(
        description="Decoded images in the dataset's pixel range, shaped like the input.")


class DecodeResponse(BaseModel):
    images: list[Any] = Field(
        description="The decoded image of each image's codes in the dataset's pixel range, "
        "shaped like one stored example (e.g. [28, 28]).")


class CodesResponse(BaseModel):
    indices: list[Any] = Field(
        description="The code index of each image (soft VQ: the most probable code), or "
        "a list of one index per stage for residual VQ.")
    codes_per_stage: list[int] = Field(
        description="The number of codes of each stage (one entry unless residual): "
        "indices go from 0 to that number minus one.")


class ClassifyResponse(BaseModel):
    labels: list[int] = Field(description="Most probable class per image.")
    names: list[str] = Field(description="Its class name (config.json class_names).")
    probabilities: list[list[float]] = Field(description="Softmax over the classes.")


def error_response(error):
    """The JSON answer to a refused request: `{"error": message}` and its status."""
    return JSONResponse({"error": error.message}, status_code=error.status)


@bentoml.service(
    name="softvq",
    workers=int(os.environ.get("SOFTVQ_WORKERS", "1")),
    traffic={"timeout": 30, "max_concurrency": MAX_CONCURRENCY},
    logging={"access": {"enabled": os.environ.get("SOFTVQ_ACCESS_LOG", "0") == "1"}},
    metrics={"enabled": os.environ.get("SOFTVQ_METRICS", "1") == "1"},
    # OpenTelemetry spans cost ~0.2 ms of CPU per request (serving/README.md) and
    # go nowhere unless an exporter is configured: off unless SOFTVQ_TRACING=1.
    tracing={} if os.environ.get("SOFTVQ_TRACING", "0") == "1" else {"excluded_urls": [".*"]},
)
class SoftVQService:
    """Encode, cluster and classify images with one exported training run."""

    def __init__(self):
        phases = Phases()
        load_or_stop(lambda: self._load(phases))  # one line and a clean stop on failure
        # The model's own /metrics series (serving/metrics.py).
        self.metrics = ServedMetrics(self.model, cluster_routes=CLUSTER_ROUTES,
                                     class_routes=CLASS_ROUTES)
        self.batcher = MicroBatcher(self.model.predict, max_batch=MODEL_BATCH,
                                    observe=self.metrics.batch_observer("encoder"))
        self.decoder = MicroBatcher(self._decode, max_batch=MODEL_BATCH,
                                    observe=self.metrics.batch_observer("autoencoder"))
        self.coder = MicroBatcher(lambda x: (self.code_model.indices(x),),
                                  max_batch=MODEL_BATCH,
                                  observe=self.metrics.batch_observer("codes"))
        self.code_decoder = MicroBatcher(lambda i: (self.code_model.decode(i),),
                                         max_batch=MODEL_BATCH,
                                         observe=self.metrics.batch_observer("decode"))
        logger.info(describe(API_KEYS))
        install_refusal_filter()  # a refused request is one log line, not a traceback
        logger.info("softvq: worker ready in %.1f s (%s)", phases.total(), phases)
        # Batch size 1 is compiled; the other sizes follow while requests are served.
        self.warming = warm_up_in_background(self.model, self.reconstructor)

    def _load(self, phases):
        with phases("Keras import"):  # timed on its own: the largest fixed cost
            import_keras()  # without scikit-learn and matplotlib (serving/fastload.py)

        self.run_dir = default_run_dir()
        with phases("encoder and head"):
            self.model = RunModel(self.run_dir, warm="first")
        self.spec = ImageSpec.from_config(self.model.config, MAX_BATCH)
        with phases("autoencoder"):
            self.reconstructor = Reconstructor(self.run_dir, self.spec, warm="first")
        self.code_model = CodeModel(self.reconstructor, MAX_BATCH, self.model.config)
        model = served_model()
        logger.info("softvq: serving %s", f"stored model {stored_tag(model)} ({self.run_dir})"
                    if model else f"run folder {self.run_dir}")

    def _decode(self, x):
        return (self.reconstructor.decode(x),)

    @bentoml.on_shutdown
    def close(self):
        self.batcher.close()
        self.decoder.close()
        self.coder.close()
        self.code_decoder.close()
        sizes = ", ".join(f"{n}: {c}" for n, c in sorted(self.batcher.batch_sizes.items()))
        logger.info("softvq model calls by images per call: {%s}", sizes)

    def _from_json(self, images):
        return images_from_json(images, self.spec)

    def _from_png(self, image):
        data = image.read_bytes() if image is not None else b""
        return image_from_upload(data, self.spec)

    @staticmethod
    def _latents(latents, probabilities):
        return {"latents": latents.tolist()}

    def _clusters(self, latents, probabilities):
        clusters, labels, distances = self.model.assign_clusters(latents)
        answer = {"clusters": clusters.tolist()}
        if labels is not None:
            answer["labels"] = labels.tolist()
        answer["distances"] = distances.tolist()
        return answer

    def _classes(self, latents, probabilities):
        labels = probabilities.argmax(axis=1)
        return {
            "labels": labels.tolist(),
            "names": [self.model.class_names[i] for i in labels],
            "probabilities": probabilities.tolist(),
        }

    async def _serve(self, route, check, value, answer):
        """Check `value` (4xx answer if bad), run the model, format with `answer`.

        The answer's clusters and labels are counted on `/metrics` under `route`.
        """
        if answer == self._classes and not self.model.labelled:
            return error_response(InvalidInput(
                "no classifier: this run was trained without labels (config.json "
                '"labelled": false), so it has no classes; /encode and /cluster answer', 404))
        try:
            x = check(value)
        except InvalidInput as e:
            return error_response(e)
        latents, probabilities = await self.batcher(x)
        result = answer(latents, probabilities)
        self.metrics.served(route, result.get("clusters"), result.get("labels"))
        return JSONResponse(result)

    @bentoml.api(route="/encode")
    async def encode(self, images: Images) -> EncodeResponse:
        """Latent vectors z (the encoder's output) for a batch of images."""
        return await self._serve("/encode", self._from_json, images, self._latents)

    @bentoml.api(route="/cluster")
    async def cluster(self, images: Images) -> ClusterResponse:
        """Nearest K-means cluster (fitted on the training latents) per image."""
        return await self._serve("/cluster", self._from_json, images, self._clusters)

    @bentoml.api(route="/classify")
    async def classify(self, images: Images) -> ClassifyResponse:
        """Class label and probabilities from the softmax head on the latents."""
        return await self._serve("/classify", self._from_json, images, self._classes)

    @bentoml.api(route="/reconstruct")
    async def reconstruct(self, images: Images) -> ReconstructResponse:
        """The autoencoder's reconstruction of each image, in the raw pixel range."""
        if not self.reconstructor.available:
            return error_response(InvalidInput(
                "no autoencoder: this run was served without autoencoder.keras, so "
                "/reconstruct is not available (store or pack the whole run folder)", 404))
        try:
            x = self._from_json(images)
        except InvalidInput as e:
            return error_response(e)
        (decoded,) = await self.decoder(x)
        shape = (len(decoded),) + per_image_shape(images)
        return JSONResponse({"images": decoded.reshape(shape).tolist()})

    @bentoml.api(route="/codes")
    async def codes(self, images: Images) -> CodesResponse:
        """The quantizer's code indices of each image, and the number of codes per stage."""
        if not self.code_model.available:
            return error_response(InvalidInput(self.code_model.reason, 404))
        try:
            x = self._from_json(images)
        except InvalidInput as e:
            return error_response(e)
        (indices,) = await self.coder(x)
        return JSONResponse({"indices": indices.tolist(),
                             "codes_per_stage": list(self.code_model.layout.codes_per_stage)})

    @bentoml.api(route="/decode")
    async def decode(self, indices: Indices) -> DecodeResponse:
        """Images decoded from code indices (as /codes answers), in the raw pixel range."""
        if not self.code_model.available:
            return error_response(InvalidInput(self.code_model.reason, 404))
        try:
            checked = indices_from_json(indices, self.code_model.layout)
        except InvalidInput as e:
            return error_response(e)
        (decoded,) = await self.code_decoder(checked)
        return JSONResponse({"images": decoded.tolist()})

    @bentoml.api(route="/encode_png")
    async def encode_png(self, image: PngFile) -> EncodeResponse:
        """`/encode` for one PNG or JPEG uploaded as the multipart field `image`."""
        return await self._serve("/encode_png", self._from_png, image, self._latents)

    @bentoml.api(route="/cluster_png")
    async def cluster_png(self, image: PngFile) -> ClusterResponse:
        """`/cluster` for one PNG or JPEG uploaded as the multipart field `image`."""
        return await self._serve("/cluster_png", self._from_png, image, self._clusters)

    @bentoml.api(route="/classify_png")
    async def classify_png(self, image: PngFile) -> ClassifyResponse:
        """`/classify` for one PNG or JPEG uploaded as the multipart field `image`."""
        return await self._serve("/classify_png", self._from_png, image, self._classes)


# The key check is outermost: a request without a valid key is refused before
# its body is read.
SoftVQService.add_asgi_middleware(ApiKeyGuard, keys=API_KEYS)
SoftVQService.add_asgi_middleware(RequestGuard, max_bytes=max_body_bytes())
SoftVQService.mount_asgi_app(ui_app(), path="/ui", name="ui")

"""The BentoML service over one training run folder (see serving/README.md).

`serving.service` holds the service; `serving.validation` the request checks,
`serving.runtime` the model loading and compiled forward pass,
`serving.batching` the opportunistic batcher and `serving.guard` the ASGI
middleware for body limits and error messages. Nothing here imports
`training/`, and nothing imports Keras at module level.
"""

"""The `/decode` request checks and schemas (serving/codes.py), without a server."""

import numpy as np
import pytest

from serving.codes import CodeLayout, indices_from_json, indices_schema
from serving.validation import InvalidInput

SINGLE = CodeLayout((32,), 0, 4, "vq")
RESIDUAL = CodeLayout((16, 16, 16), 3, 4, "rvq")


@pytest.mark.parametrize("model, bottleneck, stages, columns", [
    ("vq", {"num_codes": 128, "commitment_cost": 0.25}, (128,), 0),
    ("softvq", {"num_codes": 32, "weighting": "mnist_code"}, (32,), 0),
    ("fsq", {"levels": [8, 4, 4]}, (128,), 0),
    ("lfq", {"codebook_size": 256, "entropy_loss_weight": 0.1}, (256,), 0),
    ("rvq", {"num_quantizers": 4, "num_codes": 32}, (32, 32, 32, 32), 4),
    ("rvq", {"num_quantizers": 1, "num_codes": 8}, (8,), 1),
])
def test_layout_from_the_bottleneck_settings_of_config_json(model, bottleneck, stages, columns):
    layout = CodeLayout.from_config({"model": model, "bottleneck": bottleneck}, 64)
    assert (layout.codes_per_stage, layout.columns, layout.max_batch) == (stages, columns, 64)
    assert layout.model == model


@pytest.mark.parametrize("config", [
    {"model": "ae", "bottleneck": {"name": "bottleneck", "trainable": True}},
    {"model": "vae", "bottleneck": {"beta": 1.0}},
    {"model": "old"},  # a config.json without bottleneck settings
])
def test_runs_without_codes_have_no_layout(config):
    assert CodeLayout.from_config(config, 64) is None


def test_valid_indices_become_int32_arrays():
    single = indices_from_json([0, 31, 7.0], SINGLE)  # an integral float is an integer
    assert single.dtype == np.int32 and single.tolist() == [0, 31, 7]
    residual = indices_from_json([[0, 15, 3], [1, 2, 3]], RESIDUAL)
    assert residual.shape == (2, 3) and residual.dtype == np.int32


@pytest.mark.parametrize("layout, indices, status, message", [
    (SINGLE, None, 400, 'missing "indices"'),
    (SINGLE, 3, 422, '"indices" must be a list, got int'),
    (SINGLE, [], 422, '"indices" is empty'),
    (SINGLE, [0] * 5, 422, "batch too large: 5 images, the limit is 4"),
    (SINGLE, [1, "2"], 422, "indices[1] is a string; code indices must be integers"),
    (SINGLE, [1, None], 422, "indices[1] is null"),
    (SINGLE, [True], 422, "indices[0] is a boolean"),
    (SINGLE, [1.5], 422, "indices[0] is 1.5, not an integer"),
    (SINGLE, [float("nan")], 422, "indices[0] is nan, not an integer"),
    (SINGLE, [32], 422, "indices[0] is 32: this run's vq has 32 codes, so its indices go "
                        "from 0 to 31"),
    (SINGLE, [0, -1], 422, "indices[1] is -1: this run's vq has 32 codes"),
    (SINGLE, [[1], [2]], 422, "wrong indices shape: got array [2, 1], this run's vq takes [N]"),
    (RESIDUAL, [1, 2], 422, "wrong indices shape: got array [2], this run's rvq takes [N, 3]"),
    (RESIDUAL, [[1, 2]], 422, "got array [1, 2], this run's rvq takes [N, 3]"),
    (RESIDUAL, [[1, 2, 3], [1, 2]], 422, "got ragged lists, this run's rvq takes [N, 3]"),
    (RESIDUAL, [[1, 2, 3], [4, 16, 0]], 422, "indices[1][1] is 16: stage 2 of this run's "
                                             "rvq has 16 codes, so its indices go from 0 to 15"),
])
def test_bad_indices_are_refused_with_the_allowed_range_or_shape(layout, indices, status,
                                                                 message):
    with pytest.raises(InvalidInput) as caught:
        indices_from_json(indices, layout)
    assert caught.value.status == status
    assert message in caught.value.message
    assert caught.value.message.endswith(layout.expected)


def test_expected_sentences_name_the_form_and_range():
    assert SINGLE.expected == (
        'expected {"indices": [...]} holding the code indices of 1 to 4 images, one integer '
        "from 0 to 31 per image, as /codes answers")
    assert RESIDUAL.expected == (
        'expected {"indices": [...]} holding the code indices of 1 to 4 images, a list of 3 '
        "integers per image (one per stage), each from 0 to 15, as /codes answers")


def test_indices_schema_describes_exactly_the_accepted_form():
    jsonschema = pytest.importorskip("jsonschema_rs")  # schemathesis brings it
    for layout, good, bad in [
        (SINGLE, [[0, 31]], [[32], [[1]], [], ["1"], [0] * 513]),
        (RESIDUAL, [[[0, 15, 3]]], [[[0, 16, 3]], [[1, 2]], [1, 2, 3], []]),
    ]:
        schema = indices_schema(layout, 512)
        validator = jsonschema.Draft202012Validator(schema)
        assert validator.is_valid(schema["example"])
        for value in good:
            assert validator.is_valid(value), value
            indices_from_json(value, layout)  # the route takes it too
        for value in bad:
            assert not validator.is_valid(value), value
    generic = indices_schema(None, 8)
    validator = jsonschema.Draft202012Validator(generic)
    assert validator.is_valid([0, 3]) and validator.is_valid([[0, 1], [2, 3]])
    assert not validator.is_valid([-1]) and not validator.is_valid([0] * 9)
    assert generic["items"]["anyOf"][0]["type"] == "integer"  # what BentoML's client keeps

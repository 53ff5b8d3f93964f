"""Fuzzing the real server from its own OpenAPI spec (schemathesis): no 5xx, ever.

Every POST route gets a fixed number of generated requests in both of
schemathesis' modes: positive (bodies that follow the schema: they must reach
the model and be answered 200 on the JSON routes) and negative (bodies that
break it: wrong types, missing fields, odd content types; they must get a
4xx). Hypothesis runs derandomized with a fixed example count, so the run is
bounded (~400 requests, about 10-15 s here) and repeatable.
"""

import collections

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

EXAMPLES_PER_ROUTE_AND_MODE = 25
JSON_ROUTES = {"/encode", "/cluster", "/classify", "/codes", "/decode"}


def test_generated_requests_never_get_a_server_error(server):
    import requests
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis import GenerationMode

    spec = requests.get(server.url + "/docs.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(spec)
    statuses = collections.Counter()
    server_errors = []
    operations = [result.ok() for result in schema.get_all_operations()]
    operations = [op for op in operations if op.method.upper() == "POST"]
    assert {op.path for op in operations} >= JSON_ROUTES | {"/encode_png"}

    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(max_examples=EXAMPLES_PER_ROUTE_AND_MODE, deadline=None, database=None,
                      derandomize=True, suppress_health_check=list(HealthCheck),
                      phases=[Phase.explicit, Phase.generate])
            @given(operation.as_strategy(generation_mode=mode))
            def fuzz(case):
                response = case.call(base_url=server.url, timeout=30)
                statuses[(case.operation.path, mode.value, response.status_code)] += 1
                if response.status_code >= 500 and len(server_errors) < 5:
                    server_errors.append(
                        f"{case.method} {case.operation.path} {mode.value}: HTTP "
                        f"{response.status_code} {response.text[:200]} "
                        f"(headers {dict(case.headers or {})}, body {str(case.body)[:200]})")

            fuzz()

    assert server_errors == []
    assert sum(statuses.values()) >= len(operations) * 2 * 5  # the fuzzer did run
    assert all(status < 500 for (_, _, status) in statuses)
    # Generated valid bodies reach the model on every JSON route ...
    for route in JSON_ROUTES:
        assert statuses[(route, "positive", 200)] >= EXAMPLES_PER_ROUTE_AND_MODE // 2, statuses
    # ... and every generated invalid one is refused with a 4xx.
    negative = [status for (_, mode, status), n in statuses.items() if mode == "negative"]
    assert negative and all(400 <= status < 500 for status in negative), statuses

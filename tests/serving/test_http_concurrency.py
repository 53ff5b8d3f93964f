"""32 concurrent clients: no errors, and every answer is the right one."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytestmark = pytest.mark.slow

CLIENTS = 32
REQUESTS_PER_CLIENT = 10


def test_32_concurrent_clients_get_correct_answers(server, reference, digits_images):
    """320 requests from 32 threads with their own connections, 1-3 images each.

    Each request carries different images, so an answer routed to the wrong
    request (a batching bug) would not match.
    """
    import requests

    raw, _ = digits_images
    expected_latents = reference.latents(raw)
    expected_labels = reference.probabilities(raw).argmax(axis=1)
    routes = ["/encode", "/classify", "/cluster"]
    expected_clusters = reference.clusters(raw)[0]

    def client(index):
        rng = np.random.default_rng(index)
        failures = []
        with requests.Session() as session:
            for k in range(REQUESTS_PER_CLIENT):
                picks = rng.choice(len(raw), size=int(rng.integers(1, 4)), replace=False)
                route = routes[(index + k) % 3]
                response = session.post(
                    server.url + route, json={"images": raw[picks].tolist()}, timeout=60
                )
                if response.status_code != 200:
                    failures.append(f"{route} HTTP {response.status_code}: {response.text[:200]}")
                    continue
                answer = response.json()
                if route == "/encode":
                    ok = np.allclose(answer["latents"], expected_latents[picks], atol=1e-5)
                elif route == "/classify":
                    ok = answer["labels"] == expected_labels[picks].tolist()
                else:
                    ok = answer["clusters"] == expected_clusters[picks].tolist()
                if not ok:
                    failures.append(f"{route}: wrong answer for images {picks.tolist()}")
        return failures

    with ThreadPoolExecutor(CLIENTS) as pool:
        failures = [f for result in pool.map(client, range(CLIENTS)) for f in result]
    assert failures == []

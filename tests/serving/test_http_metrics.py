"""The model's own series on `/metrics` (serving/metrics.py), scraped after known requests.

The session's server is shared with other tests, so every check compares the
scrape after this test's requests with the scrape just before them.
"""

import concurrent.futures

import numpy as np
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from serving_helpers import CLASS_NAMES, KEYS, png_bytes

pytestmark = pytest.mark.slow


def scrape(url, headers=None):
    """`{(sample name, sorted label items): value}` of the softvq series on `/metrics`."""
    response = requests.get(url + "/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name.startswith("softvq_"):
                key = (sample.name, tuple(sorted(sample.labels.items())))
                samples[key] = sample.value
    return samples


def delta(after, before, name, **labels):
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_served_clusters_and_classes_are_counted_per_route(server, post, digits_images):
    raw, _ = digits_images
    before = scrape(server.url)
    clustered = post("/cluster", json={"images": raw[:30].tolist()}).json()
    classified = post("/classify", json={"images": raw[10:35].tolist()}).json()
    png = post("/classify_png", files={"image": ("d.png", png_bytes(raw[0] * 255 / 16),
                                                  "image/png")}).json()
    post("/encode", json={"images": raw[:4].tolist()})  # counts no cluster nor class
    after = scrape(server.url)
    clusters = np.bincount(clustered["clusters"], minlength=10)
    matched = np.bincount(clustered["labels"], minlength=10)
    classes = np.bincount(classified["labels"], minlength=10)
    assert clusters.sum() == 30 and (clusters > 0).sum() > 1  # not vacuous
    for c in range(10):
        assert delta(after, before, "softvq_served_clusters_total",
                     route="/cluster", cluster=str(c)) == clusters[c]
        assert delta(after, before, "softvq_served_clusters_total",
                     route="/cluster_png", cluster=str(c)) == 0
        name = str(c)  # the digits run's class names
        assert delta(after, before, "softvq_served_classes_total",
                     route="/cluster", class_name=name) == matched[c]
        assert delta(after, before, "softvq_served_classes_total",
                     route="/classify", class_name=name) == classes[c]
        assert delta(after, before, "softvq_served_classes_total",
                     route="/classify_png", class_name=name) == (png["labels"] == [c])
        # Every cluster and class is a series from the start, served or not.
        assert ("softvq_served_clusters_total",
                (("cluster", str(c)), ("route", "/cluster_png"))) in after
    assert not any("/encode" in dict(labels).get("route", "") for _, labels in after)


def test_training_split_shares_sit_next_to_the_traffic(server, digits_run):
    with np.load(digits_run / "kmeans.npz") as f:
        cluster_counts, class_counts = f["train_cluster_counts"], f["train_class_counts"]
    assert cluster_counts.sum() == class_counts.sum() == 1500  # the digits training split
    after = scrape(server.url)
    cluster_share = [after[("softvq_train_cluster_share", (("cluster", str(c)),))]
                     for c in range(10)]
    class_share = [after[("softvq_train_class_share", (("class_name", str(c)),))]
                   for c in range(10)]
    np.testing.assert_allclose(cluster_share, cluster_counts / 1500, atol=1e-12)
    np.testing.assert_allclose(class_share, class_counts / 1500, atol=1e-12)
    assert max(abs(s - 0.1) for s in class_share) < 0.02  # digits are balanced


def test_batch_size_histogram_counts_the_images_of_each_model_call(server, post, digits_images):
    raw, _ = digits_images
    before = scrape(server.url)
    post("/encode", json={"images": raw[:5].tolist()})  # alone: one call of 5 images
    post("/reconstruct", json={"images": raw[:3].tolist()})
    after = scrape(server.url)
    for call, images in (("encoder", 5), ("autoencoder", 3)):
        assert delta(after, before, "softvq_model_batch_images_count", call=call) == 1
        assert delta(after, before, "softvq_model_batch_images_sum", call=call) == images
    assert delta(after, before, "softvq_model_batch_images_bucket", call="encoder", le="4.0") == 0
    assert delta(after, before, "softvq_model_batch_images_bucket", call="encoder", le="8.0") == 1

    # 16 one-image requests at once: every image counted once, in at most 16 calls.
    before = after
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda i: post("/encode", json={"images": raw[i:i + 1].tolist()}),
                                range(16)))
    assert all(a.status_code == 200 for a in answers)
    after = scrape(server.url)
    assert delta(after, before, "softvq_model_batch_images_sum", call="encoder") == 16
    assert 1 <= delta(after, before, "softvq_model_batch_images_count", call="encoder") <= 16


def test_a_run_without_training_counts_has_no_share_series(rgb_server):
    """Runs written before kmeans.npz held the counts: served counts only."""
    after = scrape(rgb_server.url, headers={"Authorization": f"Bearer {KEYS[0]}"})
    assert not any(name.startswith("softvq_train_") for name, _ in after)
    for name in CLASS_NAMES:
        assert ("softvq_served_classes_total",
                (("class_name", name), ("route", "/classify"))) in after

"""The `/ui` page in a real browser: headless Chromium (Debian's packages) driven by Selenium.

Against the real server on the digits run: draw a stroke on `canvas#pad`,
upload a PNG of a real digit through `input#image`, check that the page shows
the class `/classify` answers for the same pixels and that the reconstruction
appears; upload a text file renamed .png and check that `#error` shows the
service's refusal. With API keys set, the page asks for the key and sends it.

Skipped, with the reason, when Selenium, `chromium` or `chromedriver` is
missing (`.ci/run` installs `chromium` and `chromium-driver` with apt-get
when it can).
"""

import json
import shutil

import numpy as np
import pytest
import requests

from serving_helpers import png_bytes

KEY = "browser-key-0123456789"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
try:
    import selenium  # noqa: F401
    HAVE_SELENIUM = True
except ImportError:
    HAVE_SELENIUM = False

# Decided before any fixture runs, so a skipped run trains and serves nothing.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not HAVE_SELENIUM,
                       reason="selenium is not installed (pip install -e '.[test]')"),
    pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                       reason="headless Chromium is not installed: apt-get install -y chromium "
                       "chromium-driver (.ci/run does so when it runs as root)"),
]


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1200,800"):
        options.add_argument(argument)
    session = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    session.set_script_timeout(30)
    try:
        yield session
    finally:
        session.quit()


def _wait(browser, condition, timeout=60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout).until(lambda _: condition())


def _by_id(browser, element_id):
    from selenium.webdriver.common.by import By

    return browser.find_element(By.ID, element_id)


def _open(browser, url):
    browser.get(url + "/ui/")
    _wait(browser, lambda: browser.execute_script("return document.body.dataset.ready") == "true"
          or _by_id(browser, "key-dialog").get_attribute("open") is not None)


def _answered(browser):
    """Wait until every request of the last change has been answered and shown."""
    _wait(browser, lambda: browser.execute_script(
        "return document.body.dataset.busy === 'false'"
        " && document.getElementById('prediction').dataset.state === 'ready'"
        " && document.getElementById('reconstruction').dataset.state === 'ready'"))


def _draw_stroke(browser):
    from selenium.webdriver.common.action_chains import ActionChains

    pad = _by_id(browser, "pad")
    actions = ActionChains(browser)
    actions.move_to_element_with_offset(pad, -10, -90).click_and_hold()
    for dx, dy in [(6, 18)] * 5 + [(0, 18)] * 5:
        actions.move_by_offset(dx, dy)
    actions.release().perform()


def _sent_pixels(browser):
    """The raw pixels the page sends for what the pad shows (its own functions)."""
    return browser.execute_script(
        "return toRaw(modelPixels(document.getElementById('pad'), info), info)")


def _reconstruction_brightness(browser):
    return browser.execute_script(
        "const c = document.getElementById('reconstruction');"
        "const d = c.getContext('2d', READBACK).getImageData(0, 0, c.width, c.height).data;"
        "let s = 0; for (let k = 0; k < d.length; k += 4) s += d[k]; return [c.width, c.height, s];")


def test_draw_upload_and_refusal_in_a_real_browser(browser, server, tmp_path):
    url = server.url
    _open(browser, url)
    assert _by_id(browser, "run").text.startswith("softvq on digits")

    # 1. A stroke drawn with the mouse.
    _draw_stroke(browser)
    _answered(browser)
    raw = np.asarray(_sent_pixels(browser))
    assert raw.shape == (8, 8) and raw.max() > 4  # the stroke reached the model's input
    answer = requests.post(url + "/classify", json={"images": [raw.tolist()]}, timeout=30).json()
    assert _by_id(browser, "prediction").text == answer["names"][0]
    cluster = requests.post(url + "/cluster", json={"images": [raw.tolist()]}, timeout=30).json()
    assert _by_id(browser, "cluster").get_attribute("data-cluster") == str(cluster["clusters"][0])
    assert len(_by_id(browser, "probabilities").find_elements("css selector", ".bar")) == 10

    # 2. A PNG of a real test digit of the run's dataset (the last of sklearn's digits).
    from sklearn.datasets import load_digits

    digit = load_digits().images[-1]
    data = png_bytes(np.round(digit * 255 / 16))
    path = tmp_path / "digit.png"
    path.write_bytes(data)
    browser.execute_script("document.getElementById('reconstruction').dataset.state = 'stale'")
    _by_id(browser, "image").send_keys(str(path))
    _answered(browser)
    expected = requests.post(url + "/classify_png", timeout=30,
                             files={"image": ("digit.png", data, "image/png")}).json()
    shown = _by_id(browser, "prediction").text
    assert shown == expected["names"][0]
    np.testing.assert_allclose(np.asarray(_sent_pixels(browser)),
                               np.round(digit * 255 / 16) * 16 / 255, atol=1e-3)
    width, height, brightness = _reconstruction_brightness(browser)
    assert (width, height) == (8, 8) and brightness > 0  # the reconstruction is drawn
    assert "digit.png: 8×8" in _by_id(browser, "file-note").text
    assert not _by_id(browser, "error").is_displayed()

    # 3. A text file renamed .png: the service's refusal is shown to the person.
    fake = tmp_path / "notes.png"
    fake.write_text("these are my notes, not a picture\n")
    _by_id(browser, "image").send_keys(str(fake))
    _wait(browser, lambda: _by_id(browser, "error").is_displayed())
    error = _by_id(browser, "error").text
    assert error.startswith("“notes.png” is not an image the service can read: ")
    assert "the upload is neither a PNG nor a JPEG" in error
    assert _by_id(browser, "prediction").text == shown  # the last answer stays


@pytest.fixture(scope="module")
def keyed_server(digits_run):
    from serving.launch import BentoServer

    with BentoServer(digits_run, env={"SOFTVQ_API_KEYS": KEY,
                                      "KERAS_BACKEND": "jax"}) as running:
        yield running


def _enter_key(browser, key):
    field = _by_id(browser, "apikey")
    field.clear()
    field.send_keys(key)
    _by_id(browser, "apikey-save").click()
    _wait(browser, lambda: _by_id(browser, "key-dialog").get_attribute("open") is None)


def test_with_api_keys_the_page_asks_for_the_key_and_sends_it(browser, keyed_server):
    browser.get("about:blank")
    _open(browser, keyed_server.url)
    dialog = _by_id(browser, "key-dialog")
    _wait(browser, lambda: dialog.get_attribute("open") is not None)
    assert "requires an API key" in _by_id(browser, "key-message").text
    _enter_key(browser, "a-wrong-key")
    _wait(browser, lambda: browser.execute_script("return document.body.dataset.ready") == "true")
    _draw_stroke(browser)  # refused with 401: the page asks again
    _wait(browser, lambda: dialog.get_attribute("open") is not None)
    assert _by_id(browser, "key-message").text.startswith("That key was refused: invalid API key")
    _enter_key(browser, KEY)
    _answered(browser)
    raw = _sent_pixels(browser)
    answer = requests.post(keyed_server.url + "/classify", json={"images": [raw]}, timeout=30,
                           headers={"Authorization": f"Bearer {KEY}"}).json()
    assert _by_id(browser, "prediction").text == answer["names"][0]
    assert browser.execute_script("return sessionStorage.getItem('softvq-api-key')") == KEY
    assert not _by_id(browser, "error").is_displayed()
    log = keyed_server.log(10**6)
    assert KEY not in log and "a-wrong-key" not in log
    assert json.loads(requests.get(keyed_server.url + "/ui/config.json",
                                   timeout=10).text)["api_key_required"] is True

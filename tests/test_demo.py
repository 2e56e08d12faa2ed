"""`maggie demo` end to end in a real browser: Debian's headless Chromium, driven by Selenium, against the
demo served on 127.0.0.1 by its own command.  It uploads a generated image and its masks, waits for the
mattes and checks their pixels against `maggie.Predictor` on the same inputs; a request without guidance
must come back as one line on the page."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytest.importorskip("gradio")
webdriver = pytest.importorskip("selenium.webdriver")
needs_browser = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="chromium and chromium-driver are not "
                                   "installed (apt-get install chromium chromium-driver)")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

H, W, SHORT = 64, 96, 64


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    from maggie.models import MaGGIe, MaggieConfig, save_weights

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "image.safetensors"
    save_weights(MaGGIe(MaggieConfig(arch="maggie_image")).eval(), path)
    return path


@pytest.fixture(scope="module")
def demo(tmp_path_factory, weights):
    """The demo served by `maggie demo` on a free port, with a random image network."""
    d = tmp_path_factory.mktemp("demo")
    port = free_port()
    log = open(d / "demo.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "maggie.cli", "demo", "--weights", str(weights), "--short-size",
                             str(SHORT), "--device", "cpu", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail("the demo did not start: " + (d / "demo.log").read_text()[-2000:])
            time.sleep(0.5)
    yield {"url": url, "weights": weights, "dir": d}
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1400,2000"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    yield driver
    driver.quit()


def inputs(folder: Path) -> tuple[Path, list[Path], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
    masks = np.zeros((2, H, W), np.uint8)
    masks[0, 10:58, 8:36] = 1
    masks[1, 6:60, 50:80] = 1
    image = folder / "photo.png"
    cv2.imwrite(str(image), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    files = []
    for i, m in enumerate(masks):
        files.append(folder / f"person_{i}.png")
        cv2.imwrite(str(files[-1]), m * 255)
    return image, files, rgb, masks


def status_text(browser) -> str:
    return browser.find_element(By.ID, "image-status").text.strip()


def open_with_image(browser, url: str, image: Path) -> WebDriverWait:
    """The demo's page with ``image`` given to the Image tab; the wait to use on it."""
    browser.get(url)
    wait = WebDriverWait(browser, 120)
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#image-input input[type=file]"))
    browser.find_element(By.CSS_SELECTOR, "#image-input input[type=file]").send_keys(str(image))
    return wait


@needs_browser
def test_image_upload_gives_each_persons_matte_in_the_browser(demo, browser):
    from maggie import Predictor

    image, mask_files, rgb, masks = inputs(demo["dir"])
    wait = open_with_image(browser, demo["url"], image)
    browser.find_element(By.CSS_SELECTOR, "#image-masks input[type=file]").send_keys(
        "\n".join(str(f) for f in mask_files))
    wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#image-masks .file-preview tr, "
                                                              "#image-masks table tbody tr")) >= 2)
    wait.until(lambda b: b.find_element(By.ID, "image-run").is_enabled())
    browser.find_element(By.ID, "image-run").click()
    wait.until(lambda b: "matted" in status_text(b) or "error" in status_text(b))
    assert status_text(browser) == "2 people matted"
    wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#image-mattes img")) >= 2)
    shown = browser.find_elements(By.CSS_SELECTOR, "#image-mattes img")
    # The browser decoded them (not broken images) ...
    assert all(browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) == W
               for img in shown)
    # ... and they are the network's mattes of these inputs, person by person.
    expected = Predictor(str(demo["weights"]), short_size=SHORT, device="cpu").image(rgb, masks)
    got = []
    for src in dict.fromkeys(img.get_attribute("src") for img in shown):
        data = np.frombuffer(urllib.request.urlopen(src, timeout=10).read(), np.uint8)
        got.append(cv2.imdecode(data, cv2.IMREAD_GRAYSCALE))
    assert len(got) == 2
    for matte, want in zip(got, expected, strict=True):
        assert matte.shape == (H, W)
        assert np.abs(matte.astype(np.int16) - np.round(want * 255).astype(np.int16)).max() <= 1
    assert browser.find_elements(By.CSS_SELECTOR, "#image-composite img")
    assert browser.find_elements(By.CSS_SELECTOR, "#image-download a")


@needs_browser
def test_a_request_without_guidance_is_one_line_on_the_page(demo, browser):
    image, _, _, _ = inputs(demo["dir"])
    wait = open_with_image(browser, demo["url"], image)
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#image-input img"))
    browser.find_element(By.ID, "image-run").click()
    wait.until(lambda b: "error" in status_text(b))
    text = status_text(browser)
    assert text.startswith("error: no guidance") and "Traceback" not in browser.page_source
    assert len(text.splitlines()) == 1


def test_video_request_tracks_the_first_frame_masks_and_bundles_the_matte_videos(tmp_path, weights):
    """The Video tab's request without the page: first-frame masks tracked, mattes, composite, download."""
    import zipfile

    from maggie.inference.demo import DemoSession

    _, mask_files, _, masks = inputs(tmp_path)
    video = tmp_path / "clip.mp4"
    sink = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (W, H))
    rng = np.random.default_rng(0)
    for _ in range(4):
        sink.write(rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
    sink.release()
    session = DemoSession(str(weights), short_size=SHORT, device="cpu", root=tmp_path / "work")
    r = session.matte_video(str(video), [str(f) for f in mask_files], None, False)
    assert r["status"] == "2 people matted"
    for key in ("composite", "overlay"):
        assert cv2.VideoCapture(r[key]).get(cv2.CAP_PROP_FRAME_COUNT) == 4
    names = zipfile.ZipFile(r["download"]).namelist()
    assert {"alpha_videos/00.mp4", "alpha_videos/01.mp4"} <= set(names)
    # Bad guidance is one user error, as on the page.
    from maggie.inference.inputs import InputError

    with pytest.raises(InputError, match="not both"):
        session.matte_video(str(video), [str(f) for f in mask_files], str(mask_files[0]), False)
    with pytest.raises(InputError, match="no video"):
        session.matte_video(None, None, None, False)

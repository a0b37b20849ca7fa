"""The page of `worldnet serve`, driven in a real headless Chromium: upload a photo, see the marker and the coordinates.

Needs Debian's ``chromium`` and ``chromium-driver``; ``make test`` (and so
``.ci/run``) installs them when missing (the Makefile's ``browser`` target).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time

import httpx
import pytest
from PIL import Image


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def served(model_file, tmp_path):
    """``worldnet serve`` itself, as a user starts it, on a free port."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    cmd = [sys.executable, "-m", "flows.cli", "serve", "--model", str(model_file), "--root", str(tmp_path / "root"), "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
    yield url
    proc.terminate()
    proc.wait(10)


def test_a_person_uploads_a_photo_and_sees_it_on_the_map(served, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    chromium, driver_bin = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver_bin, "headless Chromium is missing: run `make test`, which installs chromium and chromium-driver"
    photo = tmp_path / "street.jpg"
    Image.new("RGB", (320, 160), (120, 150, 90)).save(photo, quality=90)

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,900", "--disable-gpu"):
        opts.add_argument(arg)
    browser = webdriver.Chrome(service=Service(driver_bin), options=opts)
    try:
        browser.get(served)
        WebDriverWait(browser, 30).until(
            lambda b: "model:" in b.find_element(By.ID, "model").text and "…" not in b.find_element(By.ID, "model").text
        )
        browser.find_element(By.ID, "file").send_keys(str(photo))
        WebDriverWait(browser, 60).until(lambda b: b.find_element(By.ID, "marker").is_displayed())
        coords = browser.find_element(By.ID, "coords").text
        lat, lon = (float(v) for v in coords.split(","))
        assert -90 <= lat <= 90 and -180 <= lon <= 180
        assert browser.find_element(By.ID, "where").text and "clusters" in browser.find_element(By.ID, "top").text
        shot = tmp_path / "page.png"
        browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000 and Image.open(shot).size[0] >= 1000
    finally:
        browser.quit()

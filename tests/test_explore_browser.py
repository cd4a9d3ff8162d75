"""End to end: `vaelab explore` in a subprocess, driven by headless Chromium through Selenium.

Uses Debian's chromium and chromium-driver (installed by .ci/run); nothing is downloaded. Skipped
when they are missing, unless VAELAB_REQUIRE_BROWSER=1 (set by .ci/run once they are installed).
The screenshot lands in <pytest basetemp>/explore/explore.png (pytest-of-$USER/pytest-current/...),
a conditional run's in explore-cvae/explore.png.
Set VAELAB_EXPLORE_RUN=RUN_DIR to explore another run (such as a well-trained one for the docs) and
VAELAB_SCREENSHOT_COPY=FILE.png to copy the screenshot there.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1024",
]


def _require_browser():
    problems = [f"{p} is missing" for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        problems.append("selenium is not installed")
    if problems:
        message = "; ".join(problems) + " (apt-get install chromium chromium-driver; pip install selenium)"
        if os.environ.get("VAELAB_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)


def _vaelab() -> list[str]:
    script = Path(sys.executable).parent / "vaelab"
    return [str(script)] if script.exists() else [sys.executable, "-m", "vaelab"]


@pytest.fixture(scope="module")
def explorer_url(trained_run):
    """Start `vaelab explore RUN --port 0` and read the URL it prints; stop it with Ctrl-C after."""
    yield from _serve(os.environ.get("VAELAB_EXPLORE_RUN") or str(trained_run))


@pytest.fixture(scope="module")
def cvae_url(tmp_path_factory):
    """The explorer of a conditional run (2 epochs on digits), decoding as class 0 by default."""
    _require_browser()
    from vaelab.cli import main

    run = tmp_path_factory.mktemp("cvae") / "run"
    argv = ["train", "--data", "digits", "--out", str(run), "--epochs", "2", "--latent-dim", "2"]
    assert main([*argv, "--hidden", "16", "--conditional", "--no-progress"]) == 0
    yield from _serve(str(run))


def _pump_lines(stream, lines: queue.Queue) -> None:
    try:
        for line in stream:
            lines.put(line)
    except ValueError:  # the stream was closed after the server stopped
        pass


def _serve(run: str):
    _require_browser()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [*_vaelab(), "explore", run, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        # a background job (`pytest &`) inherits SIGINT ignored; the Ctrl-C below must reach the server
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    lines: queue.Queue[str] = queue.Queue()  # a reader thread: select() misses lines already buffered
    threading.Thread(target=_pump_lines, args=(proc.stdout, lines), daemon=True).start()
    url = None
    deadline = time.monotonic() + 180
    while url is None and time.monotonic() < deadline and proc.poll() is None:
        try:
            m = re.search(r"(http://127\.0\.0\.1:\d+/)", lines.get(timeout=1.0))
        except queue.Empty:
            continue
        url = m and m.group(1)
    if url is None:
        proc.kill()
        pytest.fail(f"vaelab explore did not start: {proc.stderr.read()[-2000:]}")
    yield url
    proc.send_signal(signal.SIGINT)  # what Ctrl-C does: a clean stop, exit code 0
    try:
        # 1-2 s on a quiet machine; generous because a loaded 2-core box can stall the exit
        rc = proc.wait(timeout=60)
        assert rc == 0, f"vaelab explore exited with {rc} after Ctrl-C: {proc.stderr.read()[-2000:]}"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
        proc.stderr.close()


@pytest.fixture(scope="module")
def driver(explorer_url, tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must never fetch anything
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in [*FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    drv.set_page_load_timeout(60)
    yield drv
    drv.quit()


def wait_for(condition, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def decoded(drv) -> tuple[int, str, str]:
    """(number of decodes painted, the z they show, the canvas pixels as a data URL)."""
    return drv.execute_script(
        "const c = document.getElementById('decoded');"
        "return [Number(document.body.dataset.decodes || 0), c.dataset.z || '', c.toDataURL()];"
    )


def shows(drv, z: list[float]) -> bool:
    """Whether the decoded image is of z (the page rounds z to 0.001)."""
    got = decoded(drv)[1].split(",")
    return len(got) == len(z) and all(abs(float(v) - c) < 2e-3 for v, c in zip(got, z, strict=True))


def test_moving_the_latent_point_changes_the_decoded_image(driver, explorer_url, tmp_path_factory) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    drv = driver
    drv.get(explorer_url)
    wait_for(lambda: drv.execute_script("return document.body.dataset.ready") == "1", what="the page")
    count0, z0, pixels0 = decoded(drv)
    assert count0 >= 1 and set(z0.split(",")) == {"0"}

    # Drag the point right and up in the latent plane.
    plane = drv.find_element(By.ID, "plane")
    ActionChains(drv).move_to_element(plane).click_and_hold().move_by_offset(40, -30).move_by_offset(
        40, -30
    ).release().perform()
    count1, z1, pixels1 = wait_for(lambda: (d := decoded(drv))[1] != z0 and d, what="a new decode")
    wait_for(lambda: not drv.execute_script("return document.body.dataset.busy === '1'"), what="idle")
    count1, z1, pixels1 = decoded(drv)
    info = drv.execute_script("return fetch('/api/info').then(r => r.json())")
    dx, dy = info["dims"][0], info["dims"][1]
    z = [float(v) for v in z1.split(",")]
    assert z[dx] > 0.5 and z[dy] > 0.5  # right and up, in latent units (the plane spans -3..3)
    assert count1 > count0 and pixels1 != pixels0  # the decoded image changed

    # A slider moves its dim, and the image changes again.
    slider = drv.find_element(By.ID, f"slider-z{info['sliders'][0]}")
    ActionChains(drv).click_and_hold(slider).move_by_offset(-60, 0).release().perform()
    wait_for(lambda: decoded(drv)[2] != pixels1, what="the slider's decode")

    # Two examples make an interpolation strip.
    thumbs = wait_for(lambda: drv.find_elements(By.CSS_SELECTOR, "#gallery canvas"), what="examples")
    thumbs[0].click()
    thumbs[7].click()
    frames = wait_for(lambda: drv.find_elements(By.CSS_SELECTOR, "#strip canvas"), what="interpolation")
    assert len(frames) == 10

    # Choosing a label filters the examples and moves the point to that label's centroid.
    if info["labels"] is not None:
        Select(drv.find_element(By.ID, "label")).select_by_value("3")
        wait_for(
            lambda: (
                all(
                    t.get_attribute("title").endswith("label 3")
                    for t in drv.find_elements(By.CSS_SELECTOR, "#gallery canvas")
                )
                and drv.find_elements(By.CSS_SELECTOR, "#gallery canvas")
            ),
            what="label filter",
        )
        centroid = info["centroids"]["3"]
        wait_for(lambda: shows(drv, centroid), what="the centroid")
        Select(drv.find_element(By.ID, "label")).select_by_value("")
        wait_for(lambda: len(drv.find_elements(By.CSS_SELECTOR, "#gallery canvas")) == 48, what="all labels")
        thumbs = drv.find_elements(By.CSS_SELECTOR, "#gallery canvas")
        thumbs[0].click()
        thumbs[7].click()
        ActionChains(drv).move_to_element(plane).click_and_hold().move_by_offset(70, -40).release().perform()
        time.sleep(1.0)

    drv.execute_script("window.scrollTo(0, 0)")
    errors = [e for e in drv.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
    shot = tmp_path_factory.mktemp("explore", numbered=False) / "explore.png"
    assert drv.save_screenshot(str(shot))
    print(f"screenshot: {shot}")
    if os.environ.get("VAELAB_SCREENSHOT_COPY"):
        shutil.copyfile(shot, os.environ["VAELAB_SCREENSHOT_COPY"])


def test_a_conditional_run_decodes_as_the_class_picked(driver, cvae_url, tmp_path_factory) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    drv = driver
    drv.get(cvae_url)
    wait_for(lambda: drv.execute_script("return document.body.dataset.ready") == "1", what="the page")
    info = drv.execute_script("return fetch('/api/info').then(r => r.json())")
    assert info["decode_label"] == 0 and info["n_classes"] == 10
    picker = Select(drv.find_element(By.ID, "decode-class"))
    assert picker.first_selected_option.get_attribute("value") == "0"
    tiles = drv.find_elements(By.CSS_SELECTOR, "#classes canvas")
    assert len(tiles) == 10 and drv.find_element(By.ID, "classes-box").is_displayed()

    def idle() -> None:
        wait_for(lambda: not drv.execute_script("return document.body.dataset.busy === '1'"), what="idle")

    def decoded_as() -> str:
        return drv.find_element(By.ID, "decoded").get_attribute("data-label")

    # filtering by a label moves the point to its centroid and decodes as that class
    Select(drv.find_element(By.ID, "label")).select_by_value("3")
    wait_for(lambda: shows(drv, info["centroids"]["3"]) and decoded_as() == "3", what="the centroid as 3")
    idle()
    count3, z3, pixels3 = decoded(drv)
    assert picker.first_selected_option.get_attribute("value") == "3"
    assert drv.find_element(By.ID, "save").get_attribute("href").endswith("&label=3")
    assert "on" in tiles[3].get_attribute("class").split() and "on" not in tiles[0].get_attribute("class")
    # the picker alone changes the class: same point, another image
    picker.select_by_value("5")
    wait_for(lambda: decoded(drv)[0] > count3 and decoded_as() == "5", what="the class-5 decode")
    idle()
    count5, z5, pixels5 = decoded(drv)
    assert z5 == z3 and pixels5 != pixels3
    assert drv.find_element(By.ID, "save").get_attribute("href").endswith("&label=5")
    # clicking a tile of the strip picks its class; every tile is painted
    tiles[7].click()
    wait_for(lambda: decoded(drv)[0] > count5 and decoded_as() == "7", what="the class-7 decode")
    assert picker.first_selected_option.get_attribute("value") == "7"
    painted = drv.execute_script(
        "return Array.from(document.querySelectorAll('#classes canvas'), c => c.toDataURL());"
    )
    assert len(set(painted)) == 10  # ten different images of one point
    # back to all labels: the class stays as picked
    Select(drv.find_element(By.ID, "label")).select_by_value("")
    idle()
    assert decoded_as() == "7" and picker.first_selected_option.get_attribute("value") == "7"
    assert [e for e in drv.get_log("browser") if e["level"] == "SEVERE"] == []
    shot = tmp_path_factory.mktemp("explore-cvae", numbered=False) / "explore.png"
    assert drv.save_screenshot(str(shot))
    print(f"screenshot: {shot}")

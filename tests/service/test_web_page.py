"""The web page in headless Chromium (Debian's chromium + chromium-driver, driven by Selenium) with a fake
microphone fed from a WAV file: connect with a key (kept in sessionStorage only), record, enroll per emotion,
recognise, upload a spoken file (its words come back), chat with it (streamed); checked in the DOM and by a
screenshot."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
import requests
import soundfile as sf

from emoslm.service.testing import speech_wav, tone

CHROMIUM = shutil.which("chromium")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER),
                                reason="needs Debian's chromium and chromium-driver (scripts/install.sh installs them)")


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    mic = tmp_path / "mic.wav"
    wave = np.concatenate([tone(f, 0.5, 48000) for f in (140, 190, 240, 170)])
    sf.write(mic, wave, 48000, subtype="PCM_16")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1000,1100",
                "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={mic}", "--autoplay-policy=no-user-gesture-required"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts, service=DriverService(executable_path=DRIVER))
    driver.set_script_timeout(30)
    yield driver
    driver.quit()


def _wait(driver, condition, timeout: float = 30.0):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)


def test_record_enroll_recognise_and_chat_in_chromium(browser, server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    d = browser
    d.get(server.url + "/")
    _wait(d, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
    steps = d.find_element(By.ID, "steps").text
    assert "emoslm apikey create" in steps and "Enroll" in steps and "Recognise" in steps
    # nothing works before a key: the page says where one comes from
    d.find_element(By.ID, "use-speaker").click()
    _wait(d, lambda d: "emoslm apikey create" in d.find_element(By.ID, "error").text)
    d.find_element(By.ID, "apikey").send_keys(server.key)
    d.find_element(By.ID, "connect").click()
    _wait(d, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-connected") == "1")
    labels = [b.text for b in d.find_elements(By.CSS_SELECTOR, "#enroll-buttons button")]
    assert labels == server.info()["labels"]
    assert "connected as tests" in d.find_element(By.ID, "connect-status").text
    # the key is kept for this tab only
    assert d.execute_script("return sessionStorage.getItem('emoslm.apikey')") == server.key
    assert d.execute_script("return localStorage.getItem('emoslm.apikey')") is None
    d.find_element(By.ID, "speaker").send_keys("browser-user")
    d.find_element(By.ID, "use-speaker").click()
    _wait(d, lambda d: "ready" in d.find_element(By.ID, "speaker-status").text)
    Select(d.find_element(By.ID, "duration")).select_by_visible_text("1")  # 1 s clips

    def record() -> None:
        d.find_element(By.ID, "record").click()
        _wait(d, lambda d: d.find_element(By.ID, "rec-status").text.startswith("recorded"))

    for n, label in enumerate(["anger", "joy", "sadness"], start=1):
        record()
        d.find_element(By.ID, f"enroll-{label}").click()
        _wait(d, lambda d: d.find_element(By.ID, "enroll-count").text == str(n))
    assert d.find_element(By.ID, "error").text == ""
    # the server holds what the page enrolled, as 16 kHz audio of about the recorded length
    stored = requests.get(f"{server.url}/v1/speakers/browser-user/enrollments",
                          headers={"X-API-Key": server.key}).json()["data"]
    assert [e["label"] for e in stored] == ["anger", "joy", "sadness"]
    assert all(0.5 < e["duration"] < 1.5 for e in stored)

    record()
    d.find_element(By.ID, "recognise").click()
    _wait(d, lambda d: d.find_element(By.ID, "result").get_attribute("data-mode") == "personalised")
    assert d.find_element(By.ID, "result").get_attribute("data-n-used") == "3"
    rows = d.find_elements(By.CSS_SELECTOR, "#chart .row")
    probs = {r.get_attribute("data-label"): float(r.get_attribute("data-prob")) for r in rows}
    assert list(probs) == labels and abs(sum(probs.values()) - 1) < 0.01
    top = d.find_element(By.ID, "result-label").text
    assert top == max(probs, key=probs.get)
    assert d.find_element(By.CSS_SELECTOR, f"#chart .row[data-label='{top}'] .bar").get_attribute("class") == "bar top"

    # an audio file instead of the microphone: its words are recognised
    spoken = tmp_path / "question.wav"
    spoken.write_bytes(speech_wav("What is the capital of France"))
    d.find_element(By.ID, "file").send_keys(str(spoken))
    _wait(d, lambda d: d.find_element(By.ID, "rec-status").text.startswith("file question.wav"))
    d.find_element(By.ID, "recognise").click()
    _wait(d, lambda d: "capital" in d.find_element(By.ID, "transcript").text.lower(), timeout=60)

    # chat with the file: the user's line shows the words heard, the reply is streamed in
    d.find_element(By.ID, "chat-input").send_keys("Listen:")
    d.find_element(By.ID, "chat-send").click()
    _wait(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#chat-log .msg.assistant:not([data-streaming])")) == 1,
          timeout=60)
    user_line = d.find_element(By.CSS_SELECTOR, "#chat-log .msg.user").text
    assert user_line.startswith("you: Listen:") and "france" in user_line.lower() and "[" in user_line
    assert d.find_element(By.ID, "error").text == ""

    shot = tmp_path / "page.png"
    assert d.save_screenshot(str(shot))
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(shot.read_bytes())).convert("RGB"))
    assert img.shape[0] > 500 and img.shape[1] > 500
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 20  # text, bars and controls, not a blank page
    assert (np.all(img == [0xd4, 0x58, 0x4a], axis=-1)).sum() > 50  # the top bar of the chart is drawn

"""The form at / in a real headless Chromium (Debian's chromium + chromium-driver, installed
by scripts/ci/install-system-deps.sh): fill it in, submit, see the predicted class."""

from __future__ import annotations

import os
import shutil

import pandas as pd
import pytest

from src.features.schema import to_model_frame

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture
def browser():
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        if os.environ.get("CI"):
            pytest.fail("chromium/chromedriver missing: run scripts/ci/install-system-deps.sh")
        pytest.skip("chromium not installed (scripts/ci/install-system-deps.sh installs it)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-dev-shm-usage",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def test_form_predicts_like_sklearn(start_server, browser, serving_dir, bundle, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.ui import WebDriverWait

    server = start_server(serving_dir)
    server.wait_ready()
    browser.get(server.url + "/")
    assert "Predict species" in browser.title
    record = {
        "island": "Dream",
        "bill_length_mm": 49.5,
        "bill_depth_mm": 19.0,
        "flipper_length_mm": 200.0,
        "body_mass_g": 3800.0,
        "sex": "male",
    }
    for name, value in record.items():
        element = browser.find_element(By.NAME, name)
        if element.tag_name == "select":
            Select(element).select_by_value(value)
        else:
            element.clear()
            element.send_keys(str(value))
    browser.find_element(By.ID, "predict-button").click()
    shown = WebDriverWait(browser, 15).until(
        ec.visibility_of_element_located((By.ID, "prediction"))
    )
    frame = to_model_frame(pd.DataFrame([record]), bundle["schema"])
    expected = bundle["pipeline"].predict(frame)[0]
    assert expected == "Chinstrap"  # a bill this long and deep on Dream: not the default class
    assert shown.text == expected
    table = browser.find_element(By.ID, "probabilities").text
    assert all(c in table for c in bundle["schema"]["classes"])
    browser.save_screenshot(str(tmp_path / "form.png"))

    # A value the model refuses: the page shows the server's message naming the field.
    mass = browser.find_element(By.NAME, "body_mass_g")
    mass.clear()
    mass.send_keys("1e39")
    browser.find_element(By.ID, "predict-button").click()
    WebDriverWait(browser, 15).until(
        ec.text_to_be_present_in_element((By.ID, "result"), "body_mass_g")
    )
    assert "finite" in browser.find_element(By.ID, "result").text

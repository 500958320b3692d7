"""The form at / in a real headless Chromium (Debian's chromium + chromium-driver, installed
by scripts/ci/install-system-deps.sh): fill it in, submit, see the predicted class."""

from __future__ import annotations

import os
import shutil

import pandas as pd
import pytest

from src.features.schema import to_model_frame
from src.serving.model import ServingModel

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


def form_record(bundle, test_records, default_label) -> dict:
    """A test-set record without nulls that the model does not answer with the class of the
    form's pre-filled example: the answer shown must come from the values typed in."""
    frame = to_model_frame(pd.DataFrame(test_records), bundle["schema"])
    labels = bundle["pipeline"].predict(frame)
    for record, label in zip(test_records, labels, strict=True):
        if label != default_label and all(v is not None for v in record.values()):
            return record
    raise AssertionError(f"every complete test record is predicted {default_label!r}")


def test_form_predicts_like_sklearn(
    start_server, browser, serving_dir, bundle, test_records, tmp_path
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.ui import WebDriverWait

    server = start_server(serving_dir)
    server.wait_ready()
    browser.get(server.url + "/")
    assert f"Predict {bundle['schema']['target']}" in browser.title
    example = ServingModel.load(serving_dir, open_session=False).example_record()
    default = bundle["pipeline"].predict(to_model_frame(pd.DataFrame([example]), bundle["schema"]))
    record = form_record(bundle, test_records, default[0])
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
    assert expected != default[0]  # not the pre-filled example's answer
    if "classes" in bundle["schema"]:
        assert shown.text == expected
        table = browser.find_element(By.ID, "probabilities").text
        assert all(c in table for c in bundle["schema"]["classes"])
    else:  # regression: the number the server computes, and no probabilities
        (served,), _ = ServingModel.load(serving_dir).predict([record])
        assert float(shown.text) == served  # JavaScript prints the JSON number back
        assert not browser.find_elements(By.ID, "probabilities")
    browser.save_screenshot(str(tmp_path / "form.png"))

    # A value the model refuses: the page shows the server's message naming the field.
    numeric = next(f["name"] for f in bundle["schema"]["features"] if f["type"] == "numeric")
    field = browser.find_element(By.NAME, numeric)
    field.clear()
    field.send_keys("1e39")
    browser.find_element(By.ID, "predict-button").click()
    WebDriverWait(browser, 15).until(ec.text_to_be_present_in_element((By.ID, "result"), numeric))
    assert "finite" in browser.find_element(By.ID, "result").text

"""The Train form in a real browser: a field's problem shows when the field is left (rank 0 is kept
and named, not turned into 1), fixing it clears it; the instance prompt shows only with its strategy;
several machines show one command per machine; a family switch brings the new family's defaults, its
fields and its summary, and loading a preset (or reverting to it) brings its own back in one step. Screenshots go to
tests/ui/screenshots/."""
from __future__ import annotations

import re

import pytest

from conftest import CHROMIUM
from test_browser import ARGS, box, choose, shot

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium: apt-get install -y chromium")]


def test_train_form_checks_while_editing(studio_server):
    from playwright.sync_api import expect, sync_playwright

    url, home, _ = studio_server
    expect.set_options(timeout=60_000)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        page.goto(url)
        rank = page.locator("#cfg-adapter-rank")
        expect(rank).to_contain_text("range 1 … 1024")
        box(page, "cfg-adapter-rank").fill("0")
        box(page, "cfg-training-max-steps").click()  # leave the field
        expect(rank).to_have_class(re.compile("field-error"))
        expect(rank).to_contain_text("greater than or equal to 1")
        expect(box(page, "cfg-adapter-rank")).to_have_value("0")  # kept, not clamped to 1
        expect(page.locator("#cfg-training-max-steps")).not_to_have_class(re.compile("field-error"))
        shot(page, "train-field-check")
        box(page, "cfg-adapter-rank").fill("8")
        box(page, "cfg-training-max-steps").click()
        expect(rank).not_to_have_class(re.compile("field-error"))

        prompt = page.locator("#cfg-data-instance-prompt")
        expect(prompt).to_be_hidden()  # the demo's captions come from text files
        choose(page, "cfg-data-caption-strategy", "instanceprompt")
        expect(prompt).to_be_visible()
        box(page, "cfg-data-instance-prompt").fill("a photo of sks square")

        page.locator("#cfg-section-distributed").get_by_text("Multi-GPU").first.click()
        page.locator("#cfg-advanced-distributed").get_by_text("More multi-gpu settings").click()
        box(page, "cfg-distributed-num-machines").fill("2")
        box(page, "cfg-distributed-main-process-ip").fill("10.0.0.5")
        box(page, "cfg-distributed-num-processes").click()
        machines = page.locator("#train-machines")
        expect(machines).to_contain_text("distributed.machine_rank=1")
        expect(machines).to_contain_text("distributed.machine_rank=0")
        machines.scroll_into_view_if_needed()
        shot(page, "train-machines")

        # A family switch: settings still at the old family's defaults take the new one's (accumulation 1 -> 4),
        # the image settings hide, the LLM's show, and the summary counts the new batch.
        accumulation, summary = box(page, "cfg-training-gradient-accumulation-steps"), page.locator("#train-summary")
        expect(summary).to_contain_text("× 1 accumulation")
        choose(page, "cfg-model-family", "causal_lm")
        expect(accumulation).to_have_value("4")
        expect(summary).to_contain_text("× 4 accumulation")
        expect(page.locator("#cfg-data-resolution")).to_be_hidden()
        expect(page.locator("#cfg-model-variant")).to_be_visible()
        page.click("#train-load")  # the SD 1.5 preset again: its values and its fields, one request
        expect(page.locator("#train-message")).to_contain_text("Loaded preset")
        expect(accumulation).to_have_value("1")
        expect(summary).to_contain_text("× 1 accumulation")
        expect(page.locator("#cfg-data-resolution")).to_be_visible()
        expect(page.locator("#cfg-model-variant")).to_be_hidden()
        box(page, "cfg-training-max-steps").fill("7")  # an edit, then "Revert to preset defaults" and confirm
        page.click("#train-revert")
        expect(page.locator("#train-revert-confirm")).to_be_visible()
        page.click("#train-revert-yes")
        expect(box(page, "cfg-training-max-steps")).to_have_value("20")
        expect(page.locator("#train-revert-confirm")).to_be_hidden()
        browser.close()

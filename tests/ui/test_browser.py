"""The studio in a real browser: load the tiny preset, queue it, watch it run (and re-attach after a
reload), see it complete, its loss plot and its sample. Screenshots of every tab go to
tests/ui/screenshots/."""
from __future__ import annotations

import re

import pytest

from conftest import CHROMIUM, SCREENSHOTS

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium: apt-get install -y chromium")]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
RUN_TIMEOUT_MS = 240_000


def choose(page, elem_id: str, option: str) -> None:
    page.locator(f"#{elem_id} input").click()
    page.locator(f"#{elem_id} li[role=option][aria-label='{option}']").click()


def box(page, elem_id: str):
    """The text or number input inside a Gradio component."""
    return page.locator(f"#{elem_id} input, #{elem_id} textarea").first


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def shot(page, name: str) -> None:
    """Screenshot the page; no error toast may be showing (a failed event shows one)."""
    toasts = page.locator('[data-testid="toast-body"]')
    assert toasts.count() == 0, toasts.all_inner_texts()
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def test_tiny_preset_end_to_end(studio_server):
    from playwright.sync_api import expect, sync_playwright

    url, home, app_log = studio_server
    expect.set_options(timeout=60_000)  # a busy machine answers slowly; the assertions wait for the UI
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        page.goto(url)

        # Train: load the tiny preset; a bad value is shown at its field and nothing is queued.
        choose(page, "train-preset", "tiny-sd15-lora")
        page.click("#train-load")
        expect(page.locator("#train-message")).to_contain_text("Loaded preset tiny-sd15-lora")
        expect(box(page, "cfg-model-path")).to_have_value("tiny:sd15")
        expect(page.locator("#train-summary")).to_contain_text("20")
        box(page, "cfg-training-max-steps").fill("-5")
        page.click("#train-add")
        expect(page.locator("#cfg-training-max-steps")).to_have_class(re.compile("field-error"))
        expect(page.locator("#train-message")).to_contain_text("training.max_steps")
        assert not (home / "runs").exists()
        box(page, "cfg-training-max-steps").fill("20")
        page.click("#train-add")
        expect(page.locator("#train-message")).to_contain_text("queued")
        expect(page.locator("#cfg-training-max-steps")).not_to_have_class(re.compile("field-error"))
        shot(page, "train")

        # Monitor: live progress, then the same after a page reload (re-attach to the running job).
        open_tab(page, "Monitor")
        progress = page.locator("#monitor-progress")
        expect(progress).to_contain_text(re.compile(r"step \d+ / 20"), timeout=RUN_TIMEOUT_MS)
        page.reload()
        open_tab(page, "Monitor")
        expect(progress).to_contain_text(re.compile(r"step \d+ / 20"), timeout=60_000)

        # Queue: the job completes.
        open_tab(page, "Queue")
        table = page.locator("#queue-table")
        expect(table).to_contain_text("completed", timeout=RUN_TIMEOUT_MS)
        expect(box(page, "queue-run-dir")).to_have_value(re.compile("runs/"))
        expect(page.locator("#queue-remove")).to_be_enabled()
        shot(page, "queue")

        # Monitor: the loss plot is drawn from progress.jsonl.
        open_tab(page, "Monitor")
        expect(progress).to_contain_text("step 20 / 20")
        expect(page.locator("#monitor-loss canvas, #monitor-loss svg").first).to_be_visible()
        expect(box(page, "monitor-console")).to_have_value(re.compile(r"\S"))
        page.wait_for_function("() => { const t = document.querySelector('#monitor-console textarea');"
                               " return t && t.scrollHeight > t.clientHeight && t.scrollTop > 0; }")  # newest line
        shot(page, "monitor")

        # Samples: the sample image with its prompt.
        open_tab(page, "Samples")
        expect(page.locator("#samples-gallery img").first).to_be_visible(timeout=90_000)
        expect(page.locator("#samples-summary")).to_contain_text("sample")
        shot(page, "samples")

        # Preprocess: scan the tiny preset's dataset.
        open_tab(page, "Preprocess")
        page.click("#pre-copy")
        expect(box(page, "pre-data-path")).to_have_value("demo:images")
        page.click("#pre-scan")
        expect(page.locator("#pre-message")).to_contain_text("usable image", timeout=90_000)
        shot(page, "preprocess")

        open_tab(page, "Environment")
        expect(page.locator("#env-serving")).to_contain_text("127.0.0.1")
        shot(page, "environment")

        # Queue -> "Clone into form": the finished job's settings come back into the Train form.
        open_tab(page, "Queue")
        page.click("#queue-clone")
        expect(page.locator("#train-message")).to_contain_text("Loaded the settings of job #1")
        expect(box(page, "cfg-model-path")).to_be_visible()
        expect(box(page, "cfg-training-max-steps")).to_have_value("20")
        browser.close()
    log = app_log.read_text(encoding="utf-8", errors="replace")
    (SCREENSHOTS / "app.log").write_text(log, encoding="utf-8")
    assert "Traceback" not in log, "the studio raised while serving (see tests/ui/screenshots/app.log)"

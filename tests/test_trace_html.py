"""The trace's HTML page in a real headless browser (Debian's chromium driven by playwright): it
opens without console errors, lists every module call, folds, and draws its histograms."""

from __future__ import annotations

import shutil

import pytest

from npgpt.trace.html import write_html
from npgpt.trace.subject import TraceConfig, run

BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
INSTALL = "install chromium (Debian: apt-get install -y chromium) and playwright (pip install playwright)"


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip(f"no chromium browser to test the HTML page in: {INSTALL}")
    return path


@pytest.fixture(scope="module")
def page_file(tmp_path_factory):
    trace = run(TraceConfig(model="transformer", n_embd=8, block_size=8, n_layer=1))
    path = tmp_path_factory.mktemp("html") / "trace.html"
    write_html(trace, path)
    return trace, path


def test_the_page_in_a_headless_browser(page_file):
    executable = chromium()
    sync_api = pytest.importorskip("playwright.sync_api", reason=f"playwright is missing: {INSTALL}")
    trace, path = page_file
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=BROWSER_FLAGS)
        try:
            page = browser.new_page()
            errors = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: errors.append(f"fetched {r.url}") if not r.url.startswith("file:") else None)
            page.goto(path.as_uri())
            page.wait_for_load_state("load")
            # every module call is listed, in each phase
            for phase, records in (("forward", trace.forward), ("backward", trace.backward)):
                listed = page.eval_on_selector_all(f"#{phase} details.module", "els => els.map(e => e.dataset.path)")
                assert listed == [r.path for r in records]
            # folding: a click on a module's summary hides its children; a second shows them again
            block = page.locator('#forward details.module[data-path="encoder.0"]')
            child = block.locator('details.module[data-path="encoder.0.self_attn"] > summary')
            assert child.is_visible()
            block.locator("> summary").click()
            assert not child.is_visible()
            block.locator("> summary").click()
            assert child.is_visible()
            page.click("#collapse")
            assert not child.is_visible() and page.locator("#forward > details.module > summary").is_visible()
            page.select_option("#depth", "2")
            assert child.is_visible()
            page.click("#expand")
            # the histograms are drawn: every one has bars, and they take up room
            hists = page.locator("svg.hist")
            assert hists.count() > len(trace.records)
            bars = page.eval_on_selector_all("svg.hist", "els => els.map(s => s.querySelectorAll('rect').length)")
            assert min(bars) >= 1
            box = hists.first.bounding_box()
            assert box["width"] > 50 and box["height"] > 10
            heights = page.eval_on_selector_all("svg.hist rect", "els => els.map(r => r.getBBox().height)")
            assert max(heights) > 5
            assert errors == []
        finally:
            browser.close()

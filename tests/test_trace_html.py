"""The trace's HTML page in a real headless browser (Debian's chromium driven by playwright): it
opens without console errors, lists every module call, folds, and draws its histograms; for a
GPT's trace and a Transformer's (one browser opens both pages)."""

from __future__ import annotations

import shutil

import pytest

from npgpt.trace.html import write_html
from npgpt.runs.trace import TraceConfig, run

BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
INSTALL = "install chromium (Debian: apt-get install -y chromium) and playwright (pip install playwright)"


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip(f"no chromium browser to test the HTML page in: {INSTALL}")
    return path


# each page: its settings, a block and one of its children (to fold)
PAGES = {"gpt": (TraceConfig(n_embd=8, block_size=8, n_layer=1), "h.0", "h.0.attn"),
         "transformer": (TraceConfig(model="transformer", n_embd=8, block_size=8, n_layer=1),
                         "encoder.0", "encoder.0.self_attn")}


@pytest.fixture(scope="module")
def page_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("html")
    pages = {}
    for name, (cfg, block, child) in PAGES.items():
        trace = run(cfg)
        write_html(trace, folder / f"{name}.html")
        pages[name] = (trace, folder / f"{name}.html", block, child)
    return pages


def test_both_pages_were_made(page_files):
    assert {name: trace.meta["model"] for name, (trace, *_) in page_files.items()} == {
        "gpt": "GPT", "transformer": "Transformer"}


def test_the_pages_in_a_headless_browser(page_files):
    executable = chromium()
    sync_api = pytest.importorskip("playwright.sync_api", reason=f"playwright is missing: {INSTALL}")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=BROWSER_FLAGS)
        try:
            for name, (trace, path, block, child) in page_files.items():
                check_page(browser.new_page(), trace, path, block, child)
        finally:
            browser.close()


def check_page(page, trace, path, block_path, child_path) -> None:
    """The page at path opens cleanly, lists trace's calls, folds at block_path, draws histograms."""
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: errors.append(f"fetched {r.url}") if not r.url.startswith("file:") else None)
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    # every module call is listed, in each phase
    for phase, records in (("forward", trace.forward), ("backward", trace.backward)):
        listed = page.eval_on_selector_all(f"#{phase} details.module", "els => els.map(e => e.dataset.path)")
        assert listed == [r.path for r in records], path.name
    # folding: a click on a module's summary hides its children; a second shows them again
    block = page.locator(f'#forward details.module[data-path="{block_path}"]')
    child = block.locator(f'details.module[data-path="{child_path}"] > summary')
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
    assert errors == [], path.name

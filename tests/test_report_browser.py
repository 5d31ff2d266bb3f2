"""Reports and the runs server rendered in Debian's Chromium, driven by Playwright: every plot draws, no console
errors, and a screenshot lands in the test's temp dir. Never downloads a browser (no `playwright install`)."""

import os
import time
from pathlib import Path

import pytest

# The real tiny runs and their reports are session fixtures of test_report.py, shared so that each run trains
# and each report is written once per session.
from test_report import (  # noqa: F401
    big_run,
    grok_bare,
    grok_report,
    grok_run,
    parity_bare,
    parity_report,
    parity_run,
    served,
)

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SECTIONS = ("glance", "curves", "hidden", "phase", "seeds", "maps", "dynamics")

# Every plot has an SVG with children, and at least one drawn trace: an SVG path/bar/heatmap image, or a WebGL
# canvas of non-zero size.
PLOTS = """() => [...document.querySelectorAll('.js-plotly-plot')].map(plot => {
    const svg = plot.querySelector('.main-svg');
    const marks = plot.querySelectorAll('.scatterlayer .trace path, .barlayer .point path, .heatmaplayer image');
    const canvases = [...plot.querySelectorAll('canvas')].filter(c => c.width > 0 && c.height > 0);
    return {id: plot.id, section: plot.closest('section') ? plot.closest('section').id : null,
            svg: svg ? svg.childElementCount : 0, marks: marks.length, gl: canvases.length};
})"""
SECTION_FIGURES = """() => [...document.querySelectorAll('section')].map(section => ({id: section.id,
    figures: [...section.querySelectorAll('.figure .js-plotly-plot')].map(plot => plot.id)}))"""
RENDERED = """() => { const plots = [...document.querySelectorAll('.js-plotly-plot')];
    return plots.length > 0 && plots.every(p => p.querySelector('.main-svg') && p._fullLayout); }"""


@pytest.fixture(scope="module")
def browser():
    from playwright import sync_api  # a test extra: missing it is an error, not a skip

    if not CHROMIUM.exists():
        message = "no /usr/bin/chromium (apt-get install chromium); a browser is never downloaded"
        if os.environ.get("CI"):  # .ci/run installs it, so in CI its absence is a failure
            pytest.fail(message)
        pytest.skip(message)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    """A fresh page that records console errors and uncaught exceptions in `page.errors`."""
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    page.errors = []
    page.on("console", lambda message: page.errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    yield page
    page.close()


def rendered_plots(page) -> list[dict]:
    page.wait_for_load_state("load")
    page.wait_for_function(RENDERED, timeout=30_000)
    plots = page.evaluate(PLOTS)
    for plot in plots:
        assert plot["svg"] > 0 and (plot["marks"] > 0 or plot["gl"] > 0), plot
    return plots


@pytest.mark.parametrize("fixture", ["grok_report", "parity_report"])
def test_every_section_of_a_report_renders(fixture, request, page, tmp_path):
    report = request.getfixturevalue(fixture)
    page.goto(report.as_uri())
    plots = rendered_plots(page)
    expected = [s for s in SECTIONS if fixture == "grok_report" or s != "phase"]  # parity: no sweep
    assert [s["id"] for s in page.evaluate(SECTION_FIGURES)] == expected
    for section in page.evaluate(SECTION_FIGURES):  # every figure of every section drew
        drawn = [p["id"] for p in plots if p["section"] == section["id"]]
        assert drawn == section["figures"] and (drawn or section["id"] == "glance"), section
    assert len(plots) == report.read_text().count('<div class="figure">')
    assert any(p["id"] == "fig-cartography" and p["gl"] > 0 for p in plots)  # the WebGL scatter drew
    assert page.locator("section#glance table").count() == 2 and page.locator("tr.diverged").count() == 0
    page.screenshot(path=tmp_path / "report.png", full_page=True)
    assert (tmp_path / "report.png").stat().st_size > 10_000
    assert page.errors == []


def test_a_large_report_opens_in_a_few_seconds(big_run, page, tmp_path):
    started = time.perf_counter()
    page.goto((big_run / "report.html").as_uri())
    plots = rendered_plots(page)
    seconds = time.perf_counter() - started
    assert len(plots) == 8 and seconds < 15, seconds  # a few seconds unloaded; slack for a busy CI machine
    assert page.locator("tr.diverged").count() == 1
    page.screenshot(path=tmp_path / "large.png")
    assert page.errors == []


def test_served_list_report_and_compare_pages_render(served, page, tmp_path):
    base, _ = served
    page.goto(base + "/")
    assert page.locator("#runs tr").count() == 5  # header + broken, grok, parity, started
    page.screenshot(path=tmp_path / "runs.png")
    page.click("text=grok")
    assert page.url == base + "/run/grok/"
    assert len(rendered_plots(page)) == page.locator("div.figure").count() >= 8
    page.click("text=all runs")
    page.select_option("#compare select[name=a]", "grok")
    page.select_option("#compare select[name=b]", "parity")
    page.fill("#compare input[name=name]", "test/loss")
    page.click("#compare button")
    page.wait_for_url("**/compare?**")
    plots = rendered_plots(page)
    assert [p["id"] for p in plots] == ["fig-compare"]
    assert page.locator("#fig-compare .legendtext").filter(has_text="parity median").count() == 1
    page.screenshot(path=tmp_path / "compare.png")
    assert page.errors == []


XSS = "<img src=x onerror=window.__xss=1>"


def test_served_pages_escape_what_runs_hold_and_a_broken_run_breaks_only_itself(page, tmp_path):
    import json
    import threading
    import urllib.request

    import ontogeny as og
    from ontogeny.report.serve import make_server
    from test_report import make_run

    runs = tmp_path / "runs"
    tiny = {"task.p": 7, "model.width": 8, "steps": 20, "record.every": 10, "seeds": 2}
    og.run("grokking", overrides={**tiny, "description": f"</script><script>window.__xss=2</script>{XSS}"},
           out=runs / "hostile")
    make_run(runs / XSS, og.load_spec("grokking"))  # a directory named with HTML, and a spec echoing HTML
    (runs / XSS / "spec.toml").write_text(f"steps = '{XSS}'\n")
    damaged = og.run("grokking", overrides=tiny, out=runs / "damaged")
    shard = next((damaged.path / "writers" / "ensemble-0000" / "scalars").glob("part-*.parquet"))
    shard.write_bytes(shard.read_bytes()[:100])
    server = make_server(runs, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with urllib.request.urlopen(base + "/api/runs", timeout=60) as response:
            listed = {r["name"]: r for r in json.loads(response.read())}
        assert listed["hostile"]["state"] == "finished"
        assert listed["damaged"]["state"].startswith("unreadable: ") and "committed with" in listed["damaged"]["state"]
        assert listed[XSS]["state"].startswith("unreadable: ") and XSS in listed[XSS]["state"]
        page.goto(base + "/")
        assert page.locator("#runs tr").count() == 4  # header + the three runs, the broken ones included
        assert page.locator("#runs").inner_text().count(XSS) >= 2  # shown as text: in its name and its error
        page.click("text=hostile")
        rendered_plots(page)
        assert XSS in page.locator("section#glance").inner_text()
        assert page.evaluate("() => window.__xss") is None  # no injected script ran on either page
        assert page.errors == []
    finally:
        server.shutdown()
        server.server_close()

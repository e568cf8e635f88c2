"""Study reports opened in a real headless Chromium (Debian's ``chromium``, driven by Playwright).

Checked on the page itself: no JavaScript errors, no network requests, every expected Plotly
figure drawn (a graph div holding an SVG), the headline numbers equal to ``model_card.json``,
the trials table sorts on click, the gallery images decode. Also: a 100-trial report renders in
under 30 s, a partial study's report says what is missing, and a real ``python -m search run``
produces a report that passes the same checks.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import optuna
import pytest

from reports import _demo, gather_inputs, render_report, write_report
from reports._labels import metric_interval, metric_value

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
RENDER_BUDGET_S = 30.0

# Every figure a complete report draws (slice plots add "slice-2", ... for more parameters).
FULL_FIGURES = {"history", "importances", "parallel", "slice-1", "contour", "intermediate", "timeline",
                "roc", "pr", "confusion", "threshold", "calibration", "class-balance", "class-mean", "class-std"}

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (.ci/run installs it): browser checks skipped")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package (test extra) drives "
                                   "the system Chromium; install it with pip install -e '.[test]'")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield b
        b.close()


class Opened(NamedTuple):
    page: object
    errors: list[str]              # uncaught exceptions and console errors
    external: list[str]            # requests for anything but the file itself / inline data
    figures: dict[str, bool]       # data-figure key -> its Plotly graph div holds an <svg>


def _open(browser, path: Path) -> Opened:
    context = browser.new_context(viewport={"width": 1366, "height": 800}, offline=True)
    page = context.new_page()
    errors: list[str] = []
    external: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    page.on("console", lambda msg: errors.append(f"console: {msg.text}") if msg.type == "error" else None)

    def guard(route):
        url = route.request.url
        if url.startswith(("file:", "data:", "blob:", "about:")):
            route.continue_()
        else:
            external.append(url)
            route.abort()

    page.route("**/*", guard)
    page.goto(path.resolve().as_uri(), wait_until="load", timeout=60_000)
    n = page.evaluate("document.querySelectorAll('div.figure[data-figure]').length")
    page.wait_for_function(
        "n => document.querySelectorAll('div.figure[data-figure] div.plotly-graph-div svg.main-svg').length >= n",
        arg=n, timeout=30_000, polling=200)
    figures = page.evaluate("""() => Object.fromEntries(Array.from(
        document.querySelectorAll('div.figure[data-figure]')).map(d => [d.dataset.figure,
        !!d.querySelector('div.plotly-graph-div.js-plotly-plot svg.main-svg')]))""")
    return Opened(page, errors, external, figures)


def _assert_healthy(opened: Opened, expected: set[str]) -> None:
    assert opened.errors == []
    assert opened.external == []
    assert expected <= set(opened.figures), f"missing figures: {expected - set(opened.figures)}"
    assert all(opened.figures.values()), [k for k, ok in opened.figures.items() if not ok]
    n_graphs = opened.page.evaluate("document.querySelectorAll('div.plotly-graph-div').length")
    n_svg = opened.page.evaluate("Array.from(document.querySelectorAll('div.plotly-graph-div'))"
                                 ".filter(d => d.querySelector('svg.main-svg')).length")
    assert n_graphs == n_svg == len(opened.figures)


def _assert_headlines_match_card(page, card: dict) -> None:
    validation = card["metrics"]["validation"]
    shown = page.evaluate("""() => Array.from(document.querySelectorAll('tr[data-metric]')).map(r => ({
        name: r.dataset.metric, value: r.dataset.value, lo: r.dataset.ciLow, hi: r.dataset.ciHigh,
        text: r.cells[1].textContent.trim(), ci: r.cells[2].textContent.trim()}))""")
    assert {row["name"] for row in shown} == set(validation)
    for row in shown:
        m = validation[row["name"]]
        assert float(row["value"]) == m["value"]
        assert [float(row["lo"]), float(row["hi"])] == m["ci95"]
        assert row["text"] == metric_value(row["name"], m["value"])
        assert row["ci"] == metric_interval(row["name"], m["ci95"])
    threshold = page.get_attribute('[data-card="threshold"]', "data-value")
    assert float(threshold) == card["threshold"]
    assert float(page.get_attribute('[data-card="min_recall"]', "data-value")) == card["min_recall"]
    assert int(page.text_content('[data-card="best_trial"]')) == card["best_trial"]["number"]
    # the curves' source (validation_predictions.csv) reproduces the card: no disagreement notice
    assert page.locator('[data-notice="model-disagree"]').count() == 0


def _column(page, key: str) -> list[str]:
    return page.evaluate("""key => { const t = document.querySelector('table[data-table=trials]');
        const i = Array.from(t.tHead.rows[0].cells).findIndex(c => c.dataset.key === key);
        return Array.from(t.tBodies[0].rows).map(r => r.cells[i].dataset.v); }""", key)


# ----------------------------------------------------------------------------- a 100-trial study
@pytest.fixture(scope="module")
def hundred(tmp_path_factory):
    out = tmp_path_factory.mktemp("report100")
    images = _demo.make_images()
    study = _demo.make_study(f"sqlite:///{out / 'study.db'}", name="hundred", n_trials=100, images=images)
    folder = _demo.export_demo_model(out / "best_model", study, images)
    t0 = time.perf_counter()
    path = render_report(gather_inputs(study, folder, images=images), out / "report.html")
    seconds = time.perf_counter() - t0
    return study, folder, path, seconds


def test_hundred_trial_report_renders_fast(hundred):
    _, _, path, seconds = hundred
    print(f"\n100-trial report: {seconds:.1f} s, {path.stat().st_size / 1e6:.2f} MB")
    assert seconds < RENDER_BUDGET_S


def test_full_report_in_chromium(browser, hundred):
    study, folder, path, _ = hundred
    opened = _open(browser, path)
    _assert_healthy(opened, FULL_FIGURES)
    _assert_headlines_match_card(opened.page, json.loads((folder / "model_card.json").read_text()))
    page = opened.page
    assert page.evaluate("document.querySelectorAll('#missing').length") == 0       # nothing missing
    assert [a.strip() for a in page.locator("nav a").all_text_contents()] == [
        "Summary", "Search diagnostics", "Exported model", "Error analysis", "Data"]
    # gallery thumbnails (inline PNGs) decode, with a heat map beside each X-ray
    sizes = page.evaluate("Array.from(document.querySelectorAll('figure.case img')).map(i => i.naturalWidth)")
    assert sizes and all(w > 0 for w in sizes) and len(sizes) % 2 == 0
    # the trials table sorts by clicking a header: ascending, then descending, blanks last
    score = page.locator('table[data-table=trials] th[data-key="value"]')
    score.click()
    values = _column(page, "value")
    numbers = [float(v) for v in values if v]
    assert numbers == sorted(numbers) and values[len(numbers):] == [""] * (len(values) - len(numbers))
    score.click()
    assert [float(v) for v in _column(page, "value") if v] == sorted(numbers, reverse=True)
    assert len(values) == len(study.trials) == 100
    page.context.close()


def test_partial_study_report_in_chromium(browser, tmp_path):
    """A live study: no exported model yet, one trial still running."""
    study = _demo.make_study(f"sqlite:///{tmp_path / 'study.db'}", name="live", n_trials=3, running=1,
                             n_failed=0, seed=1)
    path = write_report(study, tmp_path / "report.html", progress=False)     # no best_model/ beside it
    opened = _open(browser, path)
    expected = {"history", "parallel", "slice-1", "intermediate", "timeline", "class-balance"}
    _assert_healthy(opened, expected)
    page = opened.page
    assert not {"roc", "confusion", "class-mean"} & set(opened.figures)
    assert "This report is incomplete" in page.text_content("#missing")
    missing = set(page.evaluate("Array.from(document.querySelectorAll('#missing li')).map(l => l.dataset.missingItem)"))
    assert {"model", "gallery", "class-images"} <= missing
    assert "No model has been exported" in page.text_content('[data-missing="model"]')
    assert page.text_content('[data-count="running"]') == "1"
    page.context.close()


# ----------------------------------------------------------------------------- a real search run
TINY = ["--set", "conv_blocks=2", "--set", "base_filters=8", "--set", "dense_units=32",
        "--set", "batch_size=64", "--set", "filter_growth=1.0"]


@pytest.mark.slow
def test_report_of_a_real_search_run(browser, tmp_path):
    pytest.importorskip("search.cli", reason="the search CLI is not available")
    out = tmp_path / "out"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PNEUMO_SEARCH_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "search", "run", "--data", "synthetic", "--trials", "3",
                           "--max-epochs", "2", "--study", "smoke", "--out", str(out), "--no-progress", *TINY],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    path = out / "report.html"
    assert path.is_file(), proc.stdout[-2000:]
    opened = _open(browser, path)
    # with 3 trials, importances and the contour may honestly be replaced by a sentence
    _assert_healthy(opened, FULL_FIGURES - {"contour", "importances"})
    for key in ("contour", "importances"):
        assert key in opened.figures or opened.page.locator(f'[data-notice="{key}"]').count() == 1
    _assert_headlines_match_card(opened.page, json.loads((out / "best_model" / "model_card.json").read_text()))
    assert opened.page.evaluate("document.querySelectorAll('figure.case img').length") > 0
    opened.page.context.close()

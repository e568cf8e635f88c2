"""Study reports opened in a real headless Chromium (Debian's ``chromium``, driven by Playwright).

Checked on the page itself: no JavaScript errors, no network requests, every expected Plotly
figure drawn (a graph div holding an SVG), the headline numbers equal to ``model_card.json``,
the trials table sorts on click, the gallery images decode. Also: a 100-trial report renders in
under 30 s, a partial study's report says what is missing, and a real ``python -m search run``
produces a report that passes the same checks. A model scored on a test split gets its test
figures beside validation's (numbers equal to the card's ``metrics.test``), the shift warning,
and a gallery of test X-rays; ``python -m search evaluate`` writes a page that passes the same
checks against its ``evaluation-<name>.json``.
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

import report_demo
from helpers import run_cli, write_xray_folder
from pneumo_models.evaluation import shift_warning
from reports import gather_inputs, render_report, write_report
from reports._labels import metric_interval, metric_value, pct

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
    images = report_demo.make_images()
    study = report_demo.make_study(f"sqlite:///{out / 'study.db'}", name="hundred", n_trials=100, images=images)
    folder = report_demo.export_demo_model(out / "best_model", study, images)
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
    study = report_demo.make_study(f"sqlite:///{tmp_path / 'study.db'}", name="live", n_trials=3, running=1,
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


# ----------------------------------------------------------------------------- test split, evaluate
def _assert_set_numbers_match(page, block: dict, key: str) -> None:
    """The ``key`` column (test, test-patients, evaluation, ...) shows ``block``'s figures."""
    shown = page.evaluate("""key => Array.from(document.querySelectorAll(`tr[data-metric] td[data-set="${key}"]`))
        .map(c => ({name: c.parentElement.dataset.metric, value: c.dataset.value, lo: c.dataset.ciLow,
                    hi: c.dataset.ciHigh, text: c.textContent.trim(), ci: c.nextElementSibling.textContent.trim()}))""",
                          key)
    figures = block["at_threshold"]
    assert {row["name"] for row in shown} == set(figures)
    for row in shown:
        m = figures[row["name"]]
        assert float(row["value"]) == m["value"] and [float(row["lo"]), float(row["hi"])] == m["ci95"]
        assert row["text"] == metric_value(row["name"], m["value"])
        assert row["ci"] == metric_interval(row["name"], m["ci95"])
    floor = page.locator(f'tr[data-extra="best_at_floor"] td[data-set="{key}"]')
    assert float(floor.get_attribute("data-value")) == block["best_at_floor"]["accuracy"]
    assert floor.text_content().strip() == pct(block["best_at_floor"]["accuracy"])


def _assert_shift_warning(page, card: dict, block: dict, what: str) -> None:
    expected = shift_warning(card["metrics"]["validation"], block["at_threshold"], what)
    warning = page.locator('[data-warning="shift"]')
    assert warning.count() == (1 if expected else 0)
    if expected:
        assert expected in warning.text_content()


@pytest.fixture(scope="module")
def with_test_split(tmp_path_factory):
    """A model scored once on a washed-out test split (a shift), its report, and its test images."""
    out = tmp_path_factory.mktemp("report-test-split")
    images = report_demo.make_images()
    study = report_demo.make_study(None, name="held", n_trials=12, images=images)
    test = report_demo.make_test_images(shift=0.3)
    folder = report_demo.export_demo_model(out / "best_model", study, images, test_images=test)
    path = render_report(gather_inputs(study, folder, images=images, test_images=test), out / "report.html")
    return folder, path


def test_report_with_a_test_split_in_chromium(browser, with_test_split):
    folder, path = with_test_split
    card = json.loads((folder / "model_card.json").read_text())
    opened = _open(browser, path)
    _assert_healthy(opened, FULL_FIGURES | {"confusion-test", "scores"})
    page = opened.page
    _assert_headlines_match_card(page, card)                            # validation, as before
    _assert_set_numbers_match(page, card["metrics"]["test"], "test")
    _assert_set_numbers_match(page, card["metrics"]["test"]["per_patient"], "test-patients")
    assert "Validation figures were used for selection; test figures were not." in page.text_content(
        '[data-note="selection"]')
    _assert_shift_warning(page, card, card["metrics"]["test"], "new patients")
    assert page.locator('#summary [data-warning="shift"]').count() == 1             # at the top of the report
    assert page.evaluate("document.querySelectorAll('#missing').length") == 0
    ids = page.evaluate("Array.from(document.querySelectorAll('figure.case')).map(f => f.dataset.id)")
    assert ids and all(i.startswith("test/") for i in ids)                          # the gallery shows test X-rays
    sizes = page.evaluate("Array.from(document.querySelectorAll('figure.case img')).map(i => i.naturalWidth)")
    assert sizes and all(w > 0 for w in sizes)
    page.context.close()


@pytest.mark.slow
def test_report_of_a_real_run_with_a_test_split(browser, tmp_path):
    """`run` on a folder with a test split: the report loads the test images itself."""
    root = write_xray_folder(tmp_path / "xr", {"train": 160, "test": 48})
    out = tmp_path / "out"
    run_cli("run", "--trials", "1", "--max-epochs", "1", "--data", str(root), "--study", "t", "--out", str(out),
            *TINY, "--ensemble", "1", "--no-progress", cache_dir=tmp_path / "cache", check=True)
    card = json.loads((out / "best_model" / "model_card.json").read_text())
    block = card["metrics"]["test"]
    assert block and block["n"] == 48
    opened = _open(browser, out / "report.html")
    _assert_healthy(opened, {"roc", "pr", "confusion", "confusion-test", "threshold", "scores", "calibration"})
    _assert_headlines_match_card(opened.page, card)
    _assert_set_numbers_match(opened.page, block, "test")
    _assert_shift_warning(opened.page, card, block, "new patients")
    ids = opened.page.evaluate("Array.from(document.querySelectorAll('figure.case')).map(f => f.dataset.id)")
    assert ids and all(i.startswith("test/") for i in ids)
    assert opened.page.locator('[data-missing="gallery-images"]').count() == 0        # test images were loaded
    opened.page.context.close()


def test_evaluation_page_in_chromium(browser, with_test_split, tmp_path):
    """`python -m search evaluate` on a folder of labelled X-rays writes the page beside its JSON."""
    folder, _ = with_test_split
    root = write_xray_folder(tmp_path / "hospital", {"train": 8, "test": 24})
    run_cli("evaluate", str(folder), "--data", str(root), "--no-progress", cache_dir=tmp_path / "cache", check=True)
    card = json.loads((folder / "model_card.json").read_text())
    payload = json.loads((folder / "evaluation-hospital-test.json").read_text())
    evaluation = payload["evaluation"]
    opened = _open(browser, folder / "evaluation-hospital-test.html")
    expected = {"roc", "pr", "confusion", "confusion-evaluation", "threshold", "scores", "calibration"}
    if evaluation.get("per_patient"):
        expected |= {"patients-roc", "patients-confusion"}
    _assert_healthy(opened, expected)
    page = opened.page
    _assert_headlines_match_card(page, card)                            # validation, from the model card
    _assert_set_numbers_match(page, evaluation, "evaluation")
    if evaluation.get("per_patient"):
        _assert_set_numbers_match(page, evaluation["per_patient"], "evaluation-patients")
    _assert_shift_warning(page, card, evaluation, "new images")
    assert int(page.text_content('[data-evaluation="n"]').replace(",", "")) == evaluation["n"] == 24
    assert int(page.text_content('[data-evaluation="skipped"]')) == len(evaluation["skipped"])
    assert [a.strip() for a in page.locator("nav a").all_text_contents()][:2] == ["Summary", "Figures"]
    page.context.close()

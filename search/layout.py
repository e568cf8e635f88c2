"""What a run writes where: the names under ``<out>`` (default ``runs/<study>``), in one place."""
from __future__ import annotations

from pathlib import Path

RUNS_DIR = "runs"            # default parent of every study's output folder
STUDY_DB = "study.db"        # the default SQLite storage (search.storage.default_url)
MODEL_DIR = "best_model"     # the exported model folder (pneumo_models.export)
REPORT_FILE = "report.html"  # the study's HTML report
CV_FILE = "crossval.json"    # `python -m search cv` results
TRIALS_DIR = "trials"        # <out>/trials/<number>/: what each trial wrote (search.objective.TrialFiles)
TRIAL_NETWORK = "network.keras"  # <out>/trials/<number>/network.keras: a complete trial's best-epoch network
WORKERS_DIR = "workers"      # <out>/workers/<host>-worker<i>.log
KERASTUNER_DIR = "kerastuner"  # KerasTuner's own state, <out>/kerastuner/<project>/


def default_out(study: str) -> Path:
    return Path(RUNS_DIR) / study

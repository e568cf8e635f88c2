"""pneumo-search: hyperparameter search for pneumonia CNNs, from the command line or from Python.

    from search import RunSettings, run_search
    outcome = run_search(RunSettings(data="synthetic", trials=10, study="demo", out="runs/demo"))
    outcome.study        # the optuna.Study
    outcome.model        # the exported model (pneumo_models.loading.ExportedModel), None with export=False
    outcome.stopped_by   # "trials", "timeout", "failures" or "interrupted" (see search.outcome)

`python -m search run ...` is the same call (search.cli builds the RunSettings). Importing this
package is light: Keras, Optuna and the engines load when a run starts.
"""
from __future__ import annotations

__all__ = ["run_search", "RunSettings", "RunOutcome", "UserError"]

_HOMES = {"run_search": "pipeline", "RunSettings": "settings", "RunOutcome": "outcome", "UserError": "errors"}


def __getattr__(name):
    if name in _HOMES:
        from importlib import import_module

        return getattr(import_module(f".{_HOMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

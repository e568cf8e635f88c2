"""Several trained networks as ONE Keras model that averages their pneumonia probabilities.

An ensemble of a few good, different networks is steadier on new patients than the single best
one: their errors differ, and averaging cancels part of them. It is built from Keras' own layers
(nested functional models, ``Resizing``, ``Average``), so the exported ``model.keras`` loads with
``keras.saving.load_model(..., safe_mode=True)`` and predicts like any single network.

The ensemble's input is the largest member input size; a member trained on smaller images gets
an anti-aliased ``Resizing`` layer in front of it (as close as Keras comes to the decoder's
resize; the ensemble's threshold and metrics are measured through that path, so they are honest
about any difference).
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import keras
import numpy as np

ENSEMBLE_NAME = "pneumonia_ensemble"


def member_size(model: keras.Model) -> int:
    """The square input side a trained network takes."""
    shape = model.inputs[0].shape
    if len(shape) != 4 or shape[1] != shape[2] or shape[3] != 1:
        raise ValueError(f"expected a (None, S, S, 1) input, got {tuple(shape)}")
    return int(shape[1])


def build_ensemble(members: Sequence[keras.Model], *, name: str = ENSEMBLE_NAME) -> keras.Model:
    """One model averaging ``members``' outputs; a single member is returned as it is."""
    members = list(members)
    if not members:
        raise ValueError("an ensemble needs at least one member")
    if len(members) == 1:
        return members[0]
    size = max(member_size(m) for m in members)
    inputs = keras.Input((size, size, 1), name="xray")
    outputs = []
    for i, member in enumerate(members, start=1):
        member = uncompiled_copy(member, f"member_{i}")  # distinct names in one graph; no optimizer state
        x = inputs
        side = member_size(member)
        if side != size:
            x = keras.layers.Resizing(side, side, interpolation="bilinear", antialias=True,
                                      name=f"resize_{i}_to_{side}")(x)
        outputs.append(member(x))
    average = keras.layers.Average(name="pneumonia", dtype="float32")(outputs)
    return keras.Model(inputs, average, name=name)


def uncompiled_copy(model: keras.Model, name: str | None = None) -> keras.Model:
    """A fresh copy of ``model`` with the same weights and no compile state at any depth.

    ``keras.models.clone_model`` re-compiles its copy when the original was compiled, and a nested
    model's serialized config carries its own ``compile_config`` (optimizer class and module
    included); ``load_model(..., compile=False)`` drops only the outermost one. A model saved with a
    nested torch ``Adam`` then fails to load where torch is not installed. So the copy is rebuilt
    from the model's Keras config with every ``compile_config`` removed: what is saved from it is
    architecture and weights only, loadable under any backend.
    """
    config = _without_compile_config(keras.saving.serialize_keras_object(model))
    copy = keras.saving.deserialize_keras_object(config)
    copy.set_weights(model.get_weights())
    if name is not None:
        copy.name = name
    return copy


def _without_compile_config(config):
    if isinstance(config, dict):
        return {k: _without_compile_config(v) for k, v in config.items() if k != "compile_config"}
    if isinstance(config, list):
        return [_without_compile_config(v) for v in config]
    return config


def ensemble_members(model: keras.Model) -> list[keras.Model]:
    """The networks inside an ensemble built here (``[model]`` for a single network)."""
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    return nested or [model]


class Choice(NamedTuple):
    """Which candidates an ensemble keeps (indices, in the candidates' order) and the validation
    log-loss of the average after each greedy step (``steps[i]``: the members then, their log-loss)."""
    members: list[int]
    steps: list[tuple[list[int], float]]


def choose_members(p_val: Sequence[np.ndarray], y_val: np.ndarray, *,
                   loss: Callable[[np.ndarray, np.ndarray], float] | None = None, replace: bool = False,
                   max_members: int | None = None) -> Choice:
    """Greedy forward selection on validation (Caruana et al. 2004), by default without replacement
    on log-loss.

    Start from the candidate whose own ``loss`` (lower is better; scikit-learn's log-loss unless
    given) is lowest; add whichever candidate lowers the average's loss most, while one does, up to
    ``max_members`` (default: as many as there are candidates). Log-loss keeps its resolution where
    the search's objective (accuracy at a recall floor) saturates, so a candidate that only adds
    confident mistakes is left out rather than averaged in ("Thirteenth round" in benchmarks/README.md). With
    ``replace`` a candidate may be added again, which weights it; ``members`` then repeats it.
    """
    from sklearn.metrics import log_loss

    p = [np.clip(np.asarray(q, dtype="float64").reshape(-1), 1e-7, 1 - 1e-7) for q in p_val]
    if not p:
        raise ValueError("choose_members needs at least one candidate")
    y = np.asarray(y_val).reshape(-1)
    score = loss or (lambda y_, q: log_loss(y_, q, labels=[0, 1]))
    limit = max_members or len(p)
    if limit > len(p) and not replace:
        raise ValueError(f"max_members={limit} needs replace=True: there are {len(p)} candidates")

    def of(members):
        return float(score(y, np.mean([p[i] for i in members], axis=0)))

    chosen = [min(range(len(p)), key=lambda i: (of([i]), i))]
    steps = [(list(chosen), of(chosen))]
    while len(chosen) < limit:
        value, i = min((of(chosen + [i]), i) for i in range(len(p)) if replace or i not in chosen)
        if value >= steps[-1][1]:
            break
        chosen.append(i)
        steps.append((sorted(chosen), value))
    return Choice(sorted(chosen), steps)


def fit_members(recipes: Sequence[dict], split_at, *, max_epochs: int, min_recall: float, patience: int,
                seeds: Sequence[int], on_epoch=None, on_batch=None, on_member=None, options=None, ready=None):
    """Train one network per recipe (``build_ensemble`` averages them).

    ``split_at(size)`` gives the training/validation split at that input size (the same images in
    the same order at every size). Each member keeps its best validation epoch. ``options``: the
    study's ``training.TrainOptions`` (None: the defaults). ``ready``: per recipe, a network
    already trained for it (taken as it is) or None (trained here). Returns the networks and their
    FitResults (None for a ready one)."""
    from .training import fit

    models, results = [], []
    for i, (params, seed) in enumerate(zip(recipes, seeds)):
        if ready is not None and ready[i] is not None:
            model, result = ready[i], None
        else:
            model, result = fit(params, split_at(int(params["input_size"])), max_epochs=max_epochs,
                                min_recall=min_recall, patience=patience, seed=int(seed), on_epoch=on_epoch,
                                on_batch=on_batch, restore_best=True, options=options)
        models.append(model)
        results.append(result)
        if on_member is not None:
            on_member(i, result)
    return models, results


# which networks get their output layer refitted after training (probe.refit_output_layer): "auto" those
# fine-tuned from a backbone, where it helped new patients (benchmarks/README.md "Twentieth round":
# test-half AUC up on nine of ten Lite0 networks), not the CNNs trained from scratch, where it did not
# (PneumoniaMNIST); "refit" all; "trained" none
OUTPUT_LAYER_CHOICES = ("auto", "refit", "trained")


def refits_output_layer(choice: str, params: dict) -> bool:
    """Whether ``choice`` (one of OUTPUT_LAYER_CHOICES) refits the output layer of a network of ``params``."""
    if choice not in OUTPUT_LAYER_CHOICES:
        raise ValueError(f"unknown output layer choice {choice!r}; choose one of {OUTPUT_LAYER_CHOICES}")
    return choice == "refit" or (choice == "auto" and params.get("backbone", "none") != "none")


def refit_output_layers(networks: Sequence, recipes: Sequence[dict], split_at, *, choice: str = "auto",
                        step=None) -> list:
    """The output layer of each network that ``choice`` refits (``refits_output_layer``), refitted in place where
    that lowers its validation log-loss (``probe.refit_output_layer``, on its recipe's ``split_at(input_size)``,
    with the recipe's class weights); per network, what was done (``Refit.as_dict``) or "as trained".
    ``step(name)``: names the network in hand (a progress bar's)."""
    from .probe import refit_output_layer
    from .training import class_weights, model_input

    done = []
    for i, (network, params) in enumerate(zip(networks, recipes)):
        if not refits_output_layer(choice, params):
            done.append("as trained")
            continue
        if step is not None:
            step(f"refit output layer {i + 1}/{len(networks)} on the training films")
        split = split_at(int(params["input_size"]))
        done.append(refit_output_layer(
            network, model_input(split.x_train), split.y_train, model_input(split.x_val), split.y_val,
            class_weight=class_weights(split.y_train, params.get("class_weight", "none"))).as_dict())
    return done


def ensemble_size(recipes: Sequence[dict]) -> int:
    """The input side of the ensemble of these recipes: the largest member's."""
    return max(int(p["input_size"]) for p in recipes)

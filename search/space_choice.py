"""Which space a run searches: what ``--space auto`` (the default) means for the run's data, and
the input sizes the cost guard leaves a space whose network is fixed.

``auto`` (README "What a default run does and costs"):
- a study that already exists keeps the space it was made with (re-running a command resumes);
- films of at least ``FILMS_FROM`` px (Kermany-like folders) get ``pretrained``: EfficientNet-Lite0
  fine-tuned from ImageNet, the recipe that held up best on new patients (benchmarks/README.md "Eleventh round"),
  when its ImageNet weights can be had (cached, installed, or downloaded once, checked) and the
  run's own choices fit that space;
- everything else gets the CNN space ``default``: small images (PneumoniaMNIST's 28 px, where
  Lite0 did not help), a machine that cannot fetch the weights (with a one-line note saying so),
  ``--weights none``, or ``--set``/``--input-sizes`` values only the CNN space has.

``choose_space`` decides from plain facts (tested without a network); ``lite0_weights_problem``
is the one step that may download.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

from pneumo_models.data.framing import AUTO_LUNGS_FROM  # no Keras behind it

from .errors import UserError

AUTO = "auto"
PRETRAINED, CNN = "pretrained", "default"
FILMS_FROM = AUTO_LUNGS_FROM  # the side from which a source counts as films (and is framed to its lungs)


class SpaceChoice(NamedTuple):
    name: str    # a space of spaces.SPACES
    reason: str  # one line: why this space (printed at the start of the run)
    note: str = ""  # one line for stderr when auto fell back from what it would have chosen


def choose_space(requested: str, resolution: int, *, recorded: str | None = None, overrides: dict | None = None,
                 input_sizes=None, weights_problem: Callable[[], str | None] = lambda: None) -> SpaceChoice:
    """The space to search. ``recorded``: the space of the study being resumed, if any;
    ``weights_problem()``: None when Lite0's ImageNet weights are at hand, else why not (one line);
    called only when auto would choose ``pretrained``."""
    if requested != AUTO:
        return SpaceChoice(requested, f"--space {requested}")
    if recorded:
        return SpaceChoice(recorded, f"--space auto, resuming a study made with space {recorded}")
    if resolution < FILMS_FROM:
        return SpaceChoice(CNN, f"--space auto, images of {resolution} px (an ImageNet network from {FILMS_FROM} px up)")
    misfit = _cnn_only_choices(overrides or {}, input_sizes)
    if misfit:
        return SpaceChoice(CNN, f"--space auto, films of {resolution} px, but {misfit}")
    problem = weights_problem()
    if problem:
        return SpaceChoice(CNN, f"--space auto, films of {resolution} px, EfficientNet-Lite0's ImageNet weights missing",
                           note=f"note: searching the CNN space {CNN!r}, not {PRETRAINED!r}: {problem}")
    return SpaceChoice(PRETRAINED, f"--space auto, films of {resolution} px: EfficientNet-Lite0 from ImageNet weights")


def _cnn_only_choices(overrides: dict, input_sizes) -> str:
    """What of the run's own choices the ``pretrained`` space cannot take ("" when nothing)."""
    from spaces import get_space

    pretrained, cnn = get_space(PRETRAINED), get_space(CNN)
    if overrides.get("backbone_weights", "imagenet") != "imagenet":
        return f"--weights {overrides['backbone_weights']}"
    cnn_only = sorted(set(overrides) & (set(cnn.names) - set(pretrained.names)))
    if cnn_only:
        return f"--set {', '.join(cnn_only)} (CNN parameters)"
    if input_sizes and not set(input_sizes) & set(pretrained.input_sizes()):
        return f"--input-sizes {','.join(map(str, input_sizes))} (Lite0 searches {pretrained.input_sizes()})"
    return ""


def lite0_weights_problem() -> str | None:
    """None when Lite0's ImageNet weights are at hand (fetched now if needed), else the one-line reason."""
    from .runtime import import_keras_quietly

    import_keras_quietly()
    from pneumo_models.backbones import WeightsUnavailable, fetch_imagenet

    try:
        fetch_imagenet(["efficientnet-lite0"], [FILMS_FROM])  # the arrays only: nothing built, no device used
    except WeightsUnavailable as exc:
        return str(exc)
    return None


def affordable_sizes(space, max_mmacs: float | None):
    """A space whose network is fixed (one backbone) keeps the input sizes within ``--max-mmacs``:
    its cost depends on the size alone, so a size over the guard would only give refused trials.
    Other spaces are returned as they are (the objective refuses costly configurations one by one)."""
    backbones = space.values("backbone", "none")
    if not max_mmacs or len(backbones) != 1 or backbones[0] == "none":
        return space
    from pneumo_models.model import estimate_mmacs

    fixed = space.fixed_values()
    cost = {s: estimate_mmacs({**fixed, "input_size": s}) for s in space.input_sizes()}
    kept = [s for s, c in cost.items() if c <= max_mmacs]
    if not kept:
        cheapest = min(cost, key=cost.get)
        raise UserError(f"space {space.name!r} costs {cost[cheapest]:.0f} million multiply-adds per image even at "
                        f"{cheapest} px, over --max-mmacs {max_mmacs:g}: raise it (0 = no limit, sensible on a GPU)")
    return space if len(kept) == len(cost) else space.restrict_choices("input_size", kept)

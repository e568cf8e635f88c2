"""The report's "Exported model" section: the exported model on its validation set, and beside it the
data's test split when the model was scored on one. Its headline table is ``reports.model_headline``'s,
its figures ``reports.model_curves``'; this module puts them together with the notices a reader needs
(a stale or foreign card, predictions that disagree with it, curves that cannot be drawn).
"""
from __future__ import annotations

from ._blocks import HtmlBlock, NoticeBlock, Section
from .inputs import ReportInputs, missing_model_notice
from .model_curves import curve_blocks
from .model_headline import _draw_headline, _get_headline_info
from .scored_sets import model_sets, patient_set


_NO_CURVES = {"validation": ("model-curves", "Curves are missing: the model folder has no validation predictions.",
                             "Curves are missing: the validation predictions hold only one class."),
              "test": ("model-curves-test", "Test curves are missing: the model folder has no test_predictions.csv.",
                       "Test curves are missing: the test predictions hold only one class.")}


def build_section(inputs: ReportInputs) -> Section:
    title = "Exported model"
    model = inputs.model
    if (notice := missing_model_notice(inputs, "Model evaluation")) is not None:
        return Section("model", title, [NoticeBlock("model", notice)])
    card = model.card
    blocks: list = [NoticeBlock(f"model-problem-{i}", msg, missing=False) for i, msg in enumerate(model.problems)]
    sets = model_sets(model)                       # validation, then test where the card has it
    validation, others = sets[0], sets[1:]
    columns = [c for s in others for c in (s, patient_set(s)) if c is not None]
    headline = _get_headline_info(card, validation.y, validation.p, others=columns)
    best_now = _current_best_number(inputs)
    if best_now is not None and headline.best_trial_number is not None and best_now != headline.best_trial_number:
        blocks.append(NoticeBlock("model-stale", f"The study's best trial is now {best_now}; this model was "
                                  f"exported from trial {headline.best_trial_number}.", missing=False))
    card_study = (card.get("study") or {}).get("name")
    if card_study is not None and card_study != inputs.study.study_name:
        blocks.append(NoticeBlock("model-other-study", f"This model card belongs to study {card_study!r}, "
                                  f"not {inputs.study.study_name!r}.", missing=False))
    blocks.append(HtmlBlock("headline-metrics", _draw_headline(headline)))
    if headline.disagreements:
        blocks.append(NoticeBlock("model-disagree", "The predictions file does not reproduce the card's numbers "
                                  "(the card is shown): " + "; ".join(headline.disagreements) + ".", missing=False))
    for column in headline.columns:
        if column.disagreements:
            blocks.append(NoticeBlock(f"model-disagree-{column.key}", f"The {column.title.lower()} predictions do "
                                      "not reproduce the card's numbers (the card is shown): "
                                      + "; ".join(column.disagreements) + ".", missing=False))
    for s in sets:
        if not s.has_curves:
            key, absent, one_class = _NO_CURVES[s.key]
            blocks.append(NoticeBlock(key, absent if s.y is None else one_class))
    curve_sets = [s for s in sets if s.has_curves]
    if not curve_sets:
        return Section("model", title, blocks)
    class_names = list(card.get("class_names") or ["NORMAL", "PNEUMONIA"])
    blocks += curve_blocks(curve_sets, headline.threshold, headline.min_recall, class_names)
    intro = ("The model exported at the end of the search, measured on the validation X-rays. Headline numbers "
             "are copied from its model card.")
    if others:
        intro = ("The model exported at the end of the search, measured on the validation X-rays (which chose it) "
                 "and on the data's test split (scored once, after it was final). Headline numbers are copied "
                 "from its model card.")
    return Section("model", title, blocks, intro=intro)


def _current_best_number(inputs: ReportInputs) -> int | None:
    try:
        return inputs.study.best_trial.number
    except ValueError:
        return None

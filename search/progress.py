"""Progress bars. The study's: trials finished out of the target, pruned and failed counts, best score
so far, the epoch each running trial has reported (and how far into the next one this process's trial
is), and with ``--timeout`` the time left before no new trial starts. ``EpochBar``: the epochs of one or
more trainings (the export's retraining, cross-validation). ``StepBar``: a command's steps, each named as
it starts (the export after training).

With a timeout the bar shows that instead of tqdm's estimate from the trial rate: a default run
(``--trials 100``, 2 hours) ends on its timeout long before 100 trials, and an estimate for 100 trials
would promise a day."""
from __future__ import annotations

import time
from typing import Callable, NamedTuple

import optuna
from optuna.trial import TrialState
from tqdm.auto import tqdm

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
WITH_ESTIMATE = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
WITHOUT_ESTIMATE = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}, {rate_fmt}{postfix}]"  # the timeout says when
REDRAW_SECONDS = 1.0  # within an epoch the bar is drawn at most this often (no storage read)


def count(study: optuna.Study, states=FINISHED) -> int:
    return len(study.get_trials(deepcopy=False, states=states))


class ProgressInfo(NamedTuple):
    """What the bar shows of a study at one moment."""
    finished: int               # complete or pruned, the trials --trials counts (capped at the target)
    pruned: int
    failed: int
    best: float | None          # the best complete trial's value
    timeout_left: float | None  # seconds before no new trial starts (None: no --timeout)
    running: tuple[tuple[int, int], ...] = ()  # (number, epochs reported) of each trial running in the storage


def progress_info(study: optuna.Study, target: int, deadline: float | None, now: float,
                  here: tuple[int, int] | None = None) -> ProgressInfo:
    """``deadline``: the ``time.monotonic()`` at which ``--timeout`` stops new trials; ``here``: (number,
    epochs) of a trial in flight that the storage holds only once it ends (a KerasTuner trial's)."""
    trials = study.get_trials(deepcopy=False)
    running = tuple((t.number, len(t.intermediate_values)) for t in trials if t.state == TrialState.RUNNING)
    values = [t.value for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    return ProgressInfo(finished=min(sum(t.state in FINISHED for t in trials), target),
                        pruned=sum(t.state == TrialState.PRUNED for t in trials),
                        failed=sum(t.state == TrialState.FAIL for t in trials),
                        best=max(values) if values else None,
                        timeout_left=time_left(deadline, now),
                        running=running + ((here,) if here is not None else ()))


def time_left(deadline: float | None, now: float) -> float | None:
    return None if deadline is None else max(0.0, deadline - now)


def quietly(refresh: Callable[[], None]) -> None:
    """A bar's refresh from inside a trial, which must not fail it: an error (a storage hiccup while the
    bar reads) is dropped, and the bar waits for the next epoch."""
    try:
        refresh()
    except Exception:  # noqa: BLE001 - a progress bar is never worth a trial
        pass


def running_text(running: tuple[tuple[int, int], ...], max_epochs: int | None, most: int = 4,
                 within: tuple[int, float] | None = None) -> str:
    """``#3 epoch 4/10 +46%, #4 epoch 1/10``: where each running trial is (its last reported epoch), the
    first ``most`` of them (many machines on one study run many); ``within``: (number, share of the next
    epoch's batches done) of the trial training in this process, shown from 1%."""
    of = f"/{max_epochs}" if max_epochs else ""

    def further(number: int) -> str:
        share = within[1] if within is not None and within[0] == number else 0.0
        return f" +{int(share * 100)}%" if share >= 0.01 else ""

    text = ", ".join(f"#{number} epoch {epochs}{of}{further(number)}" for number, epochs in running[:most])
    return text + (f" and {len(running) - most} more" if len(running) > most else "")


class StudyProgress:
    """Optuna callback that moves a tqdm bar as trials finish (in this or any other worker).

    ``timeout``: the run's ``--timeout`` in seconds, counted from now (None: none); ``max_epochs``: the
    epochs a trial trains at most. Called with ``trial=None`` it only refreshes: after each epoch in this
    process, every few seconds for worker processes."""

    def __init__(self, study: optuna.Study, target: int, *, enabled: bool = True, timeout: float | None = None,
                 max_epochs: int | None = None, file=None):
        self.target, self.max_epochs = target, max_epochs
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.here: tuple[int, int] | None = None
        self.within: tuple[int, float] | None = None  # (number, share of its next epoch done) of our trial
        self.info: ProgressInfo | None = None
        self.drawn = 0.0
        self.bar = tqdm(total=target, initial=min(count(study), target), desc="trials", unit="trial",
                        disable=not enabled, dynamic_ncols=True, file=file,
                        bar_format=WITH_ESTIMATE if timeout is None else WITHOUT_ESTIMATE)
        self._refresh(study)

    def _refresh(self, study: optuna.Study) -> None:
        if self.bar.disable:  # --no-progress: nothing to draw, no storage to read after every epoch
            return
        self.info = progress_info(study, self.target, self.deadline, time.monotonic(), self.here)
        self._draw()

    def _draw(self) -> None:
        """The last storage read, with the time left and our trial's share of its epoch as of now."""
        now = time.monotonic()
        info = self.info._replace(timeout_left=time_left(self.deadline, now))
        self.bar.n = info.finished
        postfix = {"best": "-" if info.best is None else f"{info.best:.4f}", "failed": info.failed,
                   "pruned": info.pruned}
        if info.timeout_left is not None:  # passed: no trial starts, those in flight finish
            postfix["timeout_in"] = tqdm.format_interval(info.timeout_left) if info.timeout_left > 0 else "passed"
        if info.running:
            postfix["running"] = running_text(info.running, self.max_epochs, within=self.within)
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.refresh()
        self.drawn = now

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self._refresh(study)

    def running_here(self, study: optuna.Study, number: int | None, epochs: int = 0) -> None:
        """Name a trial in flight that the storage holds only once it ends (KerasTuner's engine records
        its trials then); ``None`` when it has ended. Called from inside training, so ``quietly``."""
        self.here = None if number is None else (number, epochs)
        quietly(lambda: self._refresh(study))

    def within_epoch(self, number: int, done: int, steps: int) -> None:
        """Our trial ``number`` has trained ``done`` of its epoch's ``steps`` batches (``done`` 0: the
        epoch's batches are over). Called after every batch, from inside training (``quietly``): the bar
        is drawn at most every ``REDRAW_SECONDS``, from the last storage read."""
        self.within = (number, done / steps) if done and steps else None
        if self.info is not None and not self.bar.disable and time.monotonic() - self.drawn >= REDRAW_SECONDS:
            quietly(self._draw)

    def close(self) -> None:
        self.bar.close()


class EpochBar:
    """A bar over the epochs of one or more trainings (``total``) that moves within each epoch too (an
    epoch is minutes on a CPU): ``epoch`` and ``batch`` are ``fit``'s ``on_epoch`` and ``on_batch``;
    ``reach(n)`` jumps over the epochs early stopping saved. It never moves back."""

    def __init__(self, total: int, desc: str, *, enabled: bool = True, file=None):
        self.done = 0
        self.bar = tqdm(total=total, desc=desc, unit="epoch", disable=not enabled, file=file,
                        bar_format="{l_bar}{bar}| {n:.1f}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]")

    def epoch(self, result=None) -> None:
        self.reach(self.done + 1)

    def batch(self, done: int, steps: int) -> None:
        if done and steps:
            self._to(self.done + done / steps)

    def reach(self, epochs: int) -> None:
        self.done = epochs
        self._to(epochs)

    def say(self, **values) -> None:
        """Figures shown after the bar (a fold's accuracy), drawn with its next move."""
        self.bar.set_postfix(values, refresh=False)

    def _to(self, n: float) -> None:
        if n > self.bar.n:
            self.bar.update(n - self.bar.n)  # tqdm draws at most every 0.1 s

    def close(self) -> None:
        self.bar.close()


class StepBar:
    """A bar over ``total`` steps, each named as it starts (``start``); ``with`` it to close it at the end."""

    def __init__(self, total: int, desc: str, *, enabled: bool = True, file=None):
        self.started = 0
        self.bar = tqdm(total=total, desc=desc, unit="step", disable=not enabled, file=file,
                        bar_format="{desc}: {n_fmt}/{total_fmt} steps [{elapsed}{postfix}]")

    def start(self, name: str) -> None:
        if self.started:
            self.bar.update(1)  # the step before is done
        self.started += 1
        self.bar.set_postfix_str(name)

    def rename(self, name: str) -> None:
        """Say more of the step in progress."""
        self.bar.set_postfix_str(name)

    def __enter__(self) -> "StepBar":
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.bar.update(self.bar.total - self.bar.n)
        else:
            self.bar.leave = False  # an error: its one line is what the user reads, not a half-done bar
        self.bar.close()

"""One process's view of the study's data: probe once, load each input size once (from the cache)."""
from __future__ import annotations

from functools import cached_property

from pneumo_models.data import DataError, load_dataset, probe_source
from pneumo_models.data.framing import resolve_framing

from .errors import UserError


class StudyData:
    def __init__(self, source: str | None, *, val_fraction: float, seed: int, cache_dir=None,
                 progress: bool = True, framing: str = "full"):
        self.source, self.val_fraction, self.seed, self.requested_framing = source, val_fraction, seed, framing
        self.cache_dir, self.progress = cache_dir, progress
        self._by_size: dict = {}

    @cached_property
    def info(self):
        try:
            return probe_source(self.source, cache_dir=self.cache_dir)
        except DataError as exc:
            raise UserError(str(exc)) from None

    @cached_property
    def framing(self) -> str:
        """``full``, ``lungs`` or ``centre``: the requested framing, ``auto`` settled by the films' resolution
        and kind (``pneumo_models.data.framing.resolve_framing``)."""
        return resolve_framing(self.requested_framing, self.info.resolution, self.info.kind)

    def at(self, input_size: int):
        if input_size not in self._by_size:
            try:
                self._by_size[input_size] = load_dataset(
                    self.source, input_size, val_fraction=self.val_fraction, seed=self.seed,
                    cache_dir=self.cache_dir, progress=self.progress, framing=self.framing)
            except DataError as exc:
                raise UserError(str(exc)) from None
        return self._by_size[input_size]

"""A named search space: an ordered tuple of dimensions plus a description."""
from __future__ import annotations

from dataclasses import dataclass, replace

from .dimensions import CategoricalDim, Dimension, FixedDim


@dataclass(frozen=True)
class Space:
    name: str
    description: str
    dimensions: tuple[Dimension, ...]
    # Known-good recipes a fresh search tries first (Optuna's enqueue_trial), before its sampler's
    # own start-up trials: a short budget then never ends without a good model. See ``start_points``.
    starts: tuple[dict, ...] = ()
    # Values fixed when the inputs are small: ((side, {name: value}), ...), applied by
    # ``restrict_input_size`` when every input size is under ``side`` px (a lever that needs resolution).
    small_input_values: tuple = ()

    def __post_init__(self) -> None:
        names = [d.name for d in self.dimensions]
        if len(names) != len(set(names)):
            raise ValueError(f"space {self.name!r} repeats a dimension name")

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.dimensions]

    def dimension(self, name: str) -> Dimension:
        for dim in self.dimensions:
            if dim.name == name:
                return dim
        raise KeyError(name)

    @property
    def searched(self) -> tuple[Dimension, ...]:
        """Dimensions an engine samples (fixed ones are not)."""
        return tuple(d for d in self.dimensions if not isinstance(d, FixedDim))

    def fixed_values(self) -> dict:
        return {d.name: d.value for d in self.dimensions if isinstance(d, FixedDim)}

    def input_sizes(self) -> tuple[int, ...]:
        return self.values("input_size")

    def values(self, name: str, absent=None) -> tuple:
        """What a fixed or categorical dimension can take; ``(absent,)`` when the space lacks it."""
        if name not in self.names:
            return (absent,)
        dim = self.dimension(name)
        if isinstance(dim, FixedDim):
            return (dim.value,)
        if isinstance(dim, CategoricalDim):
            return tuple(dim.choices)
        raise TypeError(f"{name} is a numeric range in space {self.name!r}")

    def restrict_input_size(self, source_resolution: int) -> "Space":
        """Drop input sizes above the source resolution; fall back to the source's own size.

        Upsampling adds no information and costs compute, so a 28 px source is searched at 28 px.
        """
        dim = self.dimension("input_size")
        allowed = [s for s in self.input_sizes() if s <= source_resolution]
        space = self
        if not (isinstance(dim, FixedDim) and allowed):
            if not allowed:
                new: Dimension = FixedDim("input_size", int(source_resolution))
            elif len(allowed) == 1:
                new = FixedDim("input_size", allowed[0])
            else:
                new = CategoricalDim("input_size", tuple(allowed))
            space = replace(self, dimensions=tuple(new if d.name == "input_size" else d for d in self.dimensions))
        for side, values in space.small_input_values:
            if max(space.input_sizes()) < side:
                space = space.with_overrides(**values)
        return space

    def restrict_choices(self, name: str, allowed) -> "Space":
        """Keep only ``allowed`` choices of a categorical dimension (fixed when one remains)."""
        dim = self.dimension(name)
        if isinstance(dim, FixedDim):
            if dim.value not in allowed:
                raise ValueError(f"{name} is fixed to {dim.value!r} in space {self.name!r}")
            return self
        if not isinstance(dim, CategoricalDim):
            raise ValueError(f"{name} is not a list of choices in space {self.name!r}")
        kept = tuple(c for c in dim.choices if c in set(allowed))
        if not kept:
            raise ValueError(f"none of {list(allowed)} is a choice of {name} {list(dim.choices)}")
        new: Dimension = FixedDim(name, kept[0]) if len(kept) == 1 else CategoricalDim(name, kept)
        return replace(self, dimensions=tuple(new if d.name == name else d for d in self.dimensions))

    def with_overrides(self, **values) -> "Space":
        """Fix some dimensions to given values (tests, benchmarks, forced failures)."""
        unknown = set(values) - set(self.names)
        dims = [FixedDim(d.name, values[d.name]) if d.name in values else d for d in self.dimensions]
        dims += [FixedDim(name, values[name]) for name in sorted(unknown)]
        return replace(self, dimensions=tuple(dims))

    def start_points(self) -> list[dict]:
        """``starts`` cut to this space: values of searched dimensions that the space allows.

        A value the space does not allow (an input size above the data's resolution, a choice the
        user removed) is left out, and the engine samples that parameter instead.
        """
        points = []
        for start in self.starts:
            point = {d.name: start[d.name] for d in self.searched if d.name in start and d.contains(start[d.name])}
            if point and point not in points:
                points.append(point)
        return points

    def describe(self) -> list[str]:
        lines = []
        for d in self.dimensions:
            if isinstance(d, FixedDim):
                lines.append(f"{d.name} = {d.value!r}")
            elif isinstance(d, CategoricalDim):
                lines.append(f"{d.name} in {list(d.choices)}")
            else:
                scale = " (log)" if getattr(d, "log", False) else ""
                lines.append(f"{d.name} in [{d.low}, {d.high}]{scale}")
        return lines

"""Putting your points where the model can read them: the box check, an affine map into the box (and
back out), and the subset kept when there are more points than the model reads.

`fit_into_box` chooses a map that round-trips exactly in float64, so the numbers shown on the axes or
exported are your numbers, not your numbers plus rounding: the scale is a power of two (multiplying
and dividing by it is exact) and the offset is 0 when the data straddle 0, else a coarse dyadic number
between 0 and twice the smallest |value| (then x - offset is exact, and so is adding it back). The
price: the data fill between half and all of the requested share of the box, and data far from 0
are centred, data near 0 only shifted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from iclebm.errors import DataError
from iclebm.grid import Box

SUBSET_KINDS = ("first", "last", "random")


@dataclass(frozen=True)
class AffineMap:
    """box coordinate = (data - offset) * scale + centre, per axis (x, y); `centre` is the box's."""

    offset: tuple[float, float]
    scale: tuple[float, float]
    centre: float = 0.0

    def to_box(self, points: np.ndarray | list) -> np.ndarray:
        p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        return (p - np.asarray(self.offset)) * np.asarray(self.scale) + self.centre

    def to_data(self, points: np.ndarray | list) -> np.ndarray:
        p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        return (p - self.centre) / np.asarray(self.scale) + np.asarray(self.offset)

    def axis_to_data(self, value: float, axis: int) -> float:
        """One box coordinate on axis 0 (x) or 1 (y) in data units (for tick labels)."""
        return (value - self.centre) / self.scale[axis] + self.offset[axis]

    def describe(self, names: tuple[str, str] = ("x", "y")) -> str:
        def one(name: str, c: float, s: float) -> str:
            shift = name if c == 0 else f"({name} {'-' if c > 0 else '+'} {abs(c):.6g})"
            centre = "" if self.centre == 0 else f" + {self.centre:g}"
            return f"{name}' = {shift} × {s:.6g}{centre}"
        return "; ".join(one(n, c, s) for n, c, s in zip(names, self.offset, self.scale, strict=True))

    def as_dict(self) -> dict:
        return {"offset": list(self.offset), "scale": list(self.scale), "centre": self.centre}

    @classmethod
    def from_dict(cls, d: dict) -> AffineMap:
        return cls(tuple(map(float, d["offset"])), tuple(map(float, d["scale"])),  # type: ignore[arg-type]
                   float(d.get("centre", 0.0)))


IDENTITY = AffineMap((0.0, 0.0), (1.0, 1.0))


def outside_box(points: np.ndarray | list, box: Box) -> np.ndarray:
    """(N,) bool: the points outside [lo, hi]^2."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return ((p < box[0]) | (p > box[1])).any(axis=1)


def _exact_offset(values: np.ndarray) -> float:
    lo, hi = float(values.min()), float(values.max())
    if lo <= 0 <= hi:
        return 0.0
    sign, near, far = (1.0, lo, hi) if lo > 0 else (-1.0, -hi, -lo)  # work with |values|
    centre = min((near + far) / 2, 2 * near)
    # A grain no finer than the ulp of the largest |value| keeps x - offset exact (module docstring).
    grain = max(math.ulp(far), 2.0 ** (math.floor(math.log2(max(far - near, far * 2**-40))) - 4))
    return sign * math.floor(centre / grain) * grain


def fit_into_box(points: np.ndarray | list, box: Box, fill: float = 0.9, square: bool = False) -> AffineMap:
    """An exact-round-trip affine map (module docstring) that puts every point inside the middle `fill`
    share of the box; `square`: one scale for both axes (shapes keep their aspect ratio)."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(p) == 0 or not np.isfinite(p).all():
        raise DataError("fit_into_box needs at least one point, all finite")
    if not 0 < fill <= 1:
        raise ValueError(f"fill must be in (0, 1], got {fill}")
    centre = (box[0] + box[1]) / 2
    half = (box[1] - box[0]) / 2 * fill
    offsets = tuple(_exact_offset(p[:, a]) for a in (0, 1))
    scales = []
    for a in (0, 1):
        extent = float(np.abs(p[:, a] - offsets[a]).max())
        scales.append(1.0 if extent == 0 else 2.0 ** math.floor(math.log2(half / extent)))
    if square:
        scales = [min(scales)] * 2
    return AffineMap(offsets, (scales[0], scales[1]), centre)  # type: ignore[arg-type]


def standardise(points: np.ndarray | list, box: Box, std: float = 3.0) -> AffineMap:
    """The example data sets' map: each axis centred on its mean and scaled to standard deviation
    `std` (3: the spread of the density models' training prior), both rounded to 3 digits so the map
    reads well; points that would still leave the box are the caller's to check."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    mean, sd = p.mean(axis=0), p.std(axis=0)
    if not (sd > 0).all():
        raise DataError("standardise needs two columns that vary")
    r = lambda v: float(f"{v:.3g}")  # noqa: E731
    return AffineMap((r(mean[0]), r(mean[1])), (r(std / sd[0]), r(std / sd[1])), (box[0] + box[1]) / 2)


def choose_subset(n: int, max_context: int, how: str = "random", seed: int = 0
                  ) -> tuple[np.ndarray, str | None]:
    """Indices (sorted, file order) of the points kept when n > max_context, and a message saying which;
    all of them and no message otherwise."""
    if how not in SUBSET_KINDS:
        raise ValueError(f"unknown subset {how!r}; choose from {', '.join(SUBSET_KINDS)}")
    if n <= max_context:
        return np.arange(n), None
    if how == "first":
        idx = np.arange(max_context)
    elif how == "last":
        idx = np.arange(n - max_context, n)
    else:
        idx = np.sort(np.random.default_rng(seed).choice(n, size=max_context, replace=False))
    what = {"first": "the first", "last": "the last", "random": f"a random subset (seed {seed}) of"}[how]
    return idx, f"{n} points; the model reads at most {max_context}: kept {what} {max_context}."

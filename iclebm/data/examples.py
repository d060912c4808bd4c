"""Real example data sets, one call each, from the copies scikit-learn bundles (nothing is downloaded):

- iris: petal length vs petal width (cm) of 150 flowers, three species: three real clusters for the
  density models (Fisher 1936, via sklearn.datasets.load_iris);
- diabetes: body-mass index vs disease progression one year later of 442 patients: a real, noisy 1-D
  regression for the regression models (Efron et al. 2004, via sklearn.datasets.load_diabetes; the
  BMI column is scikit-learn's scaled one, the progression is in its own units).

Each is standardised into the model's box (`iclebm.data.rescale.standardise`), and the map is returned
with it so axes and exports can show the original units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from iclebm.data.rescale import AffineMap, standardise
from iclebm.errors import DataError
from iclebm.grid import Box


@dataclass(frozen=True)
class Example:
    name: str
    kind: str  # "density" or "regression": which models it is for
    columns: tuple[str, str]
    source: str  # named on the page and in the figure


@dataclass(frozen=True)
class ExampleData:
    example: Example
    raw: np.ndarray  # (N, 2) float64 in the data set's units
    points: np.ndarray  # (N, 2) float64 in the box: mapping.to_box(raw)
    mapping: AffineMap


EXAMPLES: dict[str, Example] = {
    "iris": Example("iris", "density", ("petal length (cm)", "petal width (cm)"),
                    "Iris flowers (Fisher 1936), petal length vs width, 150 flowers of 3 species; "
                    "scikit-learn's bundled copy (sklearn.datasets.load_iris)"),
    "diabetes": Example("diabetes", "regression", ("body-mass index (scaled)", "disease progression"),
                        "Diabetes (Efron et al. 2004), BMI vs disease progression after one year, "
                        "442 patients; scikit-learn's bundled copy (sklearn.datasets.load_diabetes)"),
}


def _raw(name: str) -> np.ndarray:
    # Imported here: scikit-learn's datasets module is slow to import and only these two need it.
    from sklearn import datasets

    if name == "iris":
        return np.asarray(datasets.load_iris().data[:, 2:4], dtype=np.float64)
    bunch = datasets.load_diabetes()
    return np.stack([bunch.data[:, 2], bunch.target], axis=1).astype(np.float64)


def load_example(name: str, box: Box, std: float | None = None) -> ExampleData:
    """The example data set `name` (EXAMPLES), standardised into `box`: each axis to its box centre and
    standard deviation `std`; default 3 (the density models' prior spread), less where the data's
    farthest point would then leave the box (a small box, e.g. the sinusoid model's [-6, 6])."""
    if name not in EXAMPLES:
        raise DataError(f"unknown example {name!r}; choose from {', '.join(EXAMPLES)}")
    raw = _raw(name)
    if std is None:
        z = np.abs((raw - raw.mean(axis=0)) / raw.std(axis=0)).max()
        std = min(3.0, math.floor(100 * 0.95 * (box[1] - box[0]) / 2 / z) / 100)
    mapping = standardise(raw, box, std)
    points = mapping.to_box(raw)
    if ((points < box[0]) | (points > box[1])).any():
        raise DataError(f"example {name!r} does not fit the box [{box[0]:g}, {box[1]:g}] at std {std:g}; "
                        "use a smaller std")
    return ExampleData(EXAMPLES[name], raw, points, mapping)

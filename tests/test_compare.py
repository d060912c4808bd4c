"""The side-by-side report: out-of-family tasks with exact densities, and the command end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from lib_helpers import random_model

from iclebm.cli import main
from iclebm.evaluation.compare import compare, families, format_compare
from iclebm.grid import grid_points
from iclebm.tasks import MixturePrior


def test_anisotropic_family_is_really_anisotropic_with_an_exact_density():
    task = families(MixturePrior())["anisotropic"](torch.Generator().manual_seed(0))
    eig = torch.linalg.eigvalsh(task.covariances())
    assert bool((eig[:, 1] / eig[:, 0] >= 4 - 1e-9).all())  # major / minor variance ratio 4..9
    grid, area = grid_points((-14.0, 14.0), 280)
    assert abs(task.log_prob(grid).exp().sum().item() * area - 1) < 1e-3


def test_families_are_seeded_and_in_the_box():
    fams = families(MixturePrior())
    assert list(fams) == ["training prior", "5 components", "anisotropic", "two moons", "rings", "swiss roll"]
    for name, draw in fams.items():
        a = draw(torch.Generator().manual_seed(3)).sample(50, torch.Generator().manual_seed(4))
        b = draw(torch.Generator().manual_seed(3)).sample(50, torch.Generator().manual_seed(4))
        assert torch.equal(a, b), name
        assert a.abs().max() < 12, name


def test_compare_runs_every_row_and_rejects_bad_settings():
    model = random_model(dtype=torch.float32, max_context=8)
    model.card = {"task": MixturePrior().to_card(), "box": [-12.0, 12.0]}
    res = compare({"m": model}, MixturePrior(), (-12.0, 12.0), ns=(0, 2), n_tasks=2, n_test=10,
                  resolution=24, only=["training prior", "two moons"])
    fam = res["families"]
    assert set(fam["training prior"]["nll"]) == {"m", "bayes", "kde_scott", "em_bic", "em_mixture", "oracle"}
    assert "oracle" not in fam["two moons"]["nll"]  # no known density
    for table in fam.values():
        assert all(np.isfinite(v).all() and len(v) == 2 for v in table["nll"].values())
        assert table["nll"]["kde_scott"][0] == pytest.approx(table["nll"]["bayes"][0], abs=1e-9)  # n = 0
    json.dumps(res)
    assert "**training prior**" in format_compare(res)
    with pytest.raises(ValueError, match="unknown families"):
        compare({"m": model}, MixturePrior(), (-12.0, 12.0), ns=(0,), only=["spirals"])
    with pytest.raises(ValueError, match="reads at most"):
        compare({"m": model}, MixturePrior(), (-12.0, 12.0), ns=(0, 16))


def test_compare_command_quick(tmp_path, capsys):
    out = tmp_path / "cmp.json"
    args = ["compare", "--quick", "--families", "training prior", "anisotropic", "--json", str(out)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "**anisotropic**" in text and "| bayes |" in text and "| mog2d |" in text
    res = json.loads(out.read_text())
    assert res["ns"] == [0, 2, 8] and res["command"].startswith("python -m iclebm compare --quick")
    assert main(["compare", "--checkpoints", str(tmp_path / "missing.safetensors")]) == 2

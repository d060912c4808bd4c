"""The objectives registry: one set of names for training, the fine-tune probe, the CLI, the cards and
the pages; the old name "nll" is still read (as "exact") wherever it was accepted, and never written."""

from __future__ import annotations

import math

import pytest
import torch

from iclebm.cli import build_parser
from iclebm.errors import IclebmError, UnknownObjectiveError
from iclebm.models.energy import EnergyConfig
from iclebm.models.mixture import MixtureConfig
from iclebm.objectives import OBJECTIVES, Objective, objective_label, resolve_objective
from iclebm.objectives.cd import CDBatch
from iclebm.objectives.exact import ExactBatch
from iclebm.objectives.mixture import MixtureBatch
from iclebm.objectives.regression import RegressionExactBatch
from iclebm.probes.ctx2weights import FineTuneConfig
from iclebm.tasks import LinearPrior
from iclebm.training.config import TrainConfig
from iclebm.training.trainer import MixtureTrainer, make_trainer
from iclebm.ui.jobs.live_settings import make_configs
from iclebm.ui.page_tables import INSIDE

BOX = (-12.0, 12.0)


def test_registry_names_labels_and_aliases():
    assert list(OBJECTIVES) == ["exact", "cd"]
    assert all(isinstance(o, Objective) and o.name == k and o.label and o.help for k, o in OBJECTIVES.items())
    assert OBJECTIVES["exact"].aliases == ("nll",) and OBJECTIVES["cd"].aliases == ()
    assert [resolve_objective(n) for n in ("exact", "nll", "cd")] == ["exact", "exact", "cd"]
    assert objective_label("nll") == objective_label("exact") == OBJECTIVES["exact"].label


@pytest.mark.parametrize("bad", ["sgd", "", "NLL", None, 3])
def test_unknown_objective_is_a_typed_value_error_listing_the_names(bad):
    with pytest.raises(UnknownObjectiveError) as info:
        resolve_objective(bad)  # type: ignore[arg-type]
    assert isinstance(info.value, IclebmError) and isinstance(info.value, ValueError)
    assert all(repr(n) in str(info.value) for n in ("exact", "nll", "cd"))


def test_configs_read_the_alias_and_keep_the_canonical_name():
    assert TrainConfig(objective="nll").objective == "exact"
    assert TrainConfig.from_dict({"objective": "nll"}).to_dict()["objective"] == "exact"  # old cards
    assert FineTuneConfig().objective == "exact" and FineTuneConfig(objective="nll").objective == "exact"
    assert FineTuneConfig(objective="cd").objective == "cd"
    train, _ = make_configs("scratch", {"objective": "nll"})
    assert train.objective == "exact"
    with pytest.raises(UnknownObjectiveError):
        make_configs("scratch", {"objective": "sgd"})


def test_cli_objective_choices_come_from_the_registry(capsys):
    p = build_parser()
    assert p.parse_args(["ctx2weights", "--objective", "nll"]).objective == "exact"  # old command lines
    assert p.parse_args(["ctx2weights"]).objective == "exact"
    assert p.parse_args(["train", "--objective", "cd"]).objective == "cd"
    assert p.parse_args(["train"]).objective is None  # the preset's
    for cmd in ("train", "ctx2weights"):
        with pytest.raises(SystemExit):
            p.parse_args([cmd, "--objective", "sgd"])
    capsys.readouterr()
    with pytest.raises(SystemExit):
        p.parse_args(["train", "--help"])
    assert "--objective {exact,cd}" in capsys.readouterr().out


def test_old_share_links_with_obj_nll_still_load_and_new_links_write_the_canonical_name():
    old, warnings = INSIDE.decode({"obj": "nll"})
    assert warnings == [] and old["in_obj"] == "exact"
    assert "obj" not in INSIDE.encode(old)  # exact is the default: the link leaves it out
    new, warnings = INSIDE.decode({"obj": "exact"})
    assert warnings == [] and new["in_obj"] == "exact"
    assert INSIDE.encode({"in_obj": "cd"})["obj"] == "cd"
    assert "obj" not in INSIDE.encode({"in_obj": "nll"})


# ---- one typed batch per objective ---------------------------------------------------------------

TINY_ENERGY = EnergyConfig(n_layer=1, n_head=2, d_model=8, max_context=8)
TINY_MIXTURE = MixtureConfig(n_layer=1, n_head=2, d_model=8, max_context=8, n_components=2)


def _density(objective: str, **kw) -> TrainConfig:
    return TrainConfig(batch_size=2, context_len=5, extra_points=2, chains=2, langevin_steps=2, warmup=2,
                       objective=objective, grid_resolution=4, **kw)


def _regression(objective: str) -> TrainConfig:
    return TrainConfig(batch_size=2, context_len=5, chains=2, langevin_steps=2, warmup=2, box=(-10.0, 10.0),
                       task=LinearPrior().to_card(), objective=objective, y_grid=8)


CASES = {
    "density cd": (lambda: make_trainer(config=_density("cd"), model_config=TINY_ENERGY), CDBatch),
    "density exact": (lambda: make_trainer(config=_density("exact"), model_config=TINY_ENERGY), ExactBatch),
    "density exact, positions and kernel": (
        lambda: make_trainer(config=_density("exact", exact_positions=3, kernel_points=4),
                             model_config=TINY_ENERGY), ExactBatch),
    "regression cd": (lambda: make_trainer(config=_regression("cd"), model_config=TINY_ENERGY), CDBatch),
    "regression exact": (lambda: make_trainer(config=_regression("exact"), model_config=TINY_ENERGY),
                         RegressionExactBatch),
    "mixture": (lambda: MixtureTrainer(config=TrainConfig(batch_size=2, context_len=5, warmup=2),
                                       model_config=TINY_MIXTURE), MixtureBatch),
}


@pytest.mark.parametrize("name", list(CASES))
def test_each_objective_has_its_batch_type_and_same_seed_same_losses(name):
    make, batch_type = CASES[name]
    trainer = make()
    batch = trainer.next_batch()
    assert type(batch) is batch_type and batch.seq.shape == (2, 5, 2)
    if isinstance(batch, CDBatch):
        assert batch.negatives.shape == (2, 5, 2, 2)
    if isinstance(batch, ExactBatch):
        assert batch.grid.shape == (2, 16, 2) and batch.cell_area == pytest.approx((24 / 4) ** 2)
        with_kernel = trainer.config.kernel_points > 0
        assert (batch.kernel is not None) == with_kernel and (batch.positions is not None) == with_kernel
    loss, _ = trainer.loss(batch)
    assert torch.isfinite(loss)
    with pytest.raises(TypeError, match="no objective"):
        trainer.loss((batch.seq,))  # the tuples of old are no batch of any objective
    runs = [[m["loss"] for m in make().run(3)] for _ in range(2)]
    assert runs[0] == runs[1] and all(math.isfinite(v) for v in runs[0])  # bit-identical, not just close

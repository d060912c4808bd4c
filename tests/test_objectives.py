"""The objectives registry: one set of names for training, the fine-tune probe, the CLI, the cards and
the pages; the old name "nll" is still read (as "exact") wherever it was accepted, and never written."""

from __future__ import annotations

import pytest

from iclebm.cli import build_parser
from iclebm.errors import IclebmError, UnknownObjectiveError
from iclebm.objectives import OBJECTIVES, Objective, objective_label, resolve_objective
from iclebm.probes.ctx2weights import FineTuneConfig
from iclebm.training.config import TrainConfig
from iclebm.ui.inside_state import InsideState, decode_inside, encode_inside
from iclebm.ui.jobs.live_settings import make_configs

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
    old, warnings = decode_inside({"obj": "nll"}, BOX, 64, n_layer=2, n_head=2)
    assert warnings == [] and old.objective == "exact"
    assert "obj" not in encode_inside(old)  # exact is the default: the link leaves it out
    new, warnings = decode_inside({"obj": "exact"}, BOX, 64, n_layer=2, n_head=2)
    assert warnings == [] and new.objective == "exact"
    assert encode_inside(InsideState(objective="cd"))["obj"] == "cd"
    assert "obj" not in encode_inside(InsideState(objective="nll"))

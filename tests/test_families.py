"""The family registry and what a prior supports: one place that knows, asked by every tool.

A model of the wrong kind is a typed error that says which kind is needed, never a silent
Gaussian-mixture fallback; an anisotropic prior says why it has no Bayes predictive; the app's
random mixture for a model is drawn from that model's own prior."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from iclebm.card import capabilities_of, family_of, is_regression, prior_from_card, prior_of, task_family
from iclebm.checkpoints import CHECKPOINT_DIR, read_card
from iclebm.cli import main as cli_main
from iclebm.errors import CapabilityError, IclebmError, TaskFamilyError
from iclebm.evaluation.bayes import hypotheses, mixture_log_predictive
from iclebm.probes import landscape as L
from iclebm.tasks import DENSITY, FAMILIES, REGRESSION, LinearPrior, MixturePrior, SinusoidPrior, get_family
from iclebm.ui.page_state import decode_mixture, encode_mixture

SHIPPED = sorted(CHECKPOINT_DIR.glob("*.safetensors"))
WIDE = MixturePrior(n_components=(1, 6), mean_std=3.0, component_std=(0.2, 1.5), aspect_ratio=(1.0, 4.0))


def test_registry_knows_every_family_and_its_kind() -> None:
    assert {f.name: f.kind for f in FAMILIES.values()} == {
        "gaussian_mixture": DENSITY, "linear": REGRESSION, "sinusoid": REGRESSION}
    assert get_family("linear").prior is LinearPrior and get_family("sinusoid").prior is SinusoidPrior
    with pytest.raises(TaskFamilyError, match="unknown task family 'swirl'.*gaussian_mixture"):
        get_family("swirl")
    assert issubclass(TaskFamilyError, IclebmError) and issubclass(TaskFamilyError, ValueError)


def test_old_cards_without_a_family_are_gaussian_mixtures() -> None:
    assert task_family(None) == task_family({}) == "gaussian_mixture"
    assert prior_from_card({"n_components": 2}) == MixturePrior(n_components=2)
    assert not is_regression({"family": "swirl"})  # unknown: not regression (and prior_of refuses it)
    with pytest.raises(TaskFamilyError):
        prior_of({"task": {"family": "swirl"}})


def test_a_tool_refuses_a_model_of_the_other_kind_with_the_reason() -> None:
    card = {"task": LinearPrior().to_card()}
    with pytest.raises(TaskFamilyError, match="compare: needs a model trained on density tasks.*linear"):
        prior_of(card, DENSITY, "compare")
    assert isinstance(prior_of(card, REGRESSION), LinearPrior)
    assert family_of(card).kind == REGRESSION


@pytest.mark.parametrize("prior, bayes", [(MixturePrior(), True), (WIDE, True), (LinearPrior(), True),
                                          (SinusoidPrior(), True),
                                          (MixturePrior(mean_std=(2.0, 3.0), aspect_ratio=2.0), False)])
def test_capabilities(prior, bayes: bool) -> None:  # type: ignore[no-untyped-def]
    caps = prior.capabilities
    assert caps.bayes is bayes
    assert caps.kind == (DENSITY if isinstance(prior, MixturePrior) else REGRESSION)
    assert (caps.why_no_bayes is None) is bayes


def test_the_bayes_predictive_refuses_what_it_does_not_cover_with_a_typed_reason() -> None:
    with pytest.raises(CapabilityError, match="isotropic components only"):
        hypotheses(WIDE)  # the isotropic component model; WIDE goes through shape_hypothesis
    ranged = MixturePrior(mean_std=(2.0, 3.0), aspect_ratio=2.0)
    with pytest.raises(CapabilityError, match="mean_std"):
        mixture_log_predictive(np.zeros((2, 2)), np.zeros((3, 2)), ranged.to_card())
    with pytest.raises(TaskFamilyError, match="density tasks"):
        mixture_log_predictive(np.zeros((2, 2)), np.zeros((3, 2)), LinearPrior().to_card())


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_card_has_a_registered_family(path: Path) -> None:
    card = read_card(path)
    caps = capabilities_of(card)
    assert caps.kind == family_of(card).kind
    if path.stem == "mog2d-wide":  # the app's default model: anisotropic, with its Bayes predictive
        assert caps.anisotropic and caps.bayes and caps.why_no_bayes is None


@pytest.mark.parametrize("prior", [MixturePrior(), WIDE], ids=["isotropic", "anisotropic"])
def test_mixture_settings_draw_exactly_the_priors_tasks(prior: MixturePrior) -> None:
    s = L.mixture_settings(prior)
    assert L.mixture_prior(s["k"], s["spread"], s["width"], s["limit"], s.get("ratio", 1.0)) == prior
    for seed in range(5):
        task, pts = L.draw_mixture(s["k"], s["spread"], s["width"], seed, 10, s["limit"], s.get("ratio", 1.0))
        g = torch.Generator().manual_seed(seed)
        want = prior.sample_task(g)
        assert torch.equal(task.means, want.means) and torch.equal(task.covariances(), want.covariances())
        np.testing.assert_array_equal(pts, want.sample(10, g).numpy().astype(np.float64))
    drawn = [L.draw_mixture(s["k"], s["spread"], s["width"], seed, 0, s["limit"], s.get("ratio", 1.0))[0]
             for seed in range(20)]
    assert any(not t.isotropic for t in drawn) == prior.anisotropic


def test_sample_report_uses_the_components_own_shape() -> None:
    """A particle 2 minor-stds across a long thin component is not 'near' it; 2 major-stds along it is."""
    task = L.mixture_prior(1, 3.0, 0.5, aspect_ratio=9.0).sample_task(torch.Generator().manual_seed(0))
    cov = task.covariances()[0].numpy()
    vals, vecs = np.linalg.eigh(cov)  # ascending: minor, major
    mu = task.means[0].numpy()
    along = mu + 2.0 * np.sqrt(vals[1]) * vecs[:, 1]
    across = mu + 4.0 * np.sqrt(vals[0]) * vecs[:, 0]
    assert L.sample_report(task, along[None])["share_near_a_component"] == 1.0
    assert L.sample_report(task, across[None])["share_near_a_component"] == 0.0


def test_mixture_links_round_trip_and_old_links_still_load() -> None:
    old = {"k": 3, "spread": 3.0, "width": [0.33, 0.5], "seed": 7}
    assert encode_mixture(old) == "3,3,0.33,0.5,7"
    assert decode_mixture("3,3,0.33,0.5,7") == old
    wide = {"k": [1, 6], "spread": 3.0, "width": [0.2, 1.5], "seed": 2, "ratio": [1.0, 4.0]}
    assert encode_mixture(wide) == "1-6,3,0.2,1.5,2,1,4"
    assert decode_mixture(encode_mixture(wide)) == wide
    narrow = {**wide, "limit": 6.0}  # a prior's mean limit other than 8 travels too
    assert encode_mixture(narrow) == "1-6,3,0.2,1.5,2,1,4,L6"
    assert decode_mixture("1-6,3,0.2,1.5,2,1,4,L6") == narrow
    for bad in ("", "3,3,0.3", "0,3,0.3,0.5,1", "6-1,3,0.3,0.5,1", "3,3,0.3,0.5,1,0.5,2", "x,3,0.3,0.5,1"):
        assert decode_mixture(bad) is None, bad


@pytest.mark.parametrize("command", ["compare", "ctx2weights"])
def test_density_commands_refuse_a_regression_model_in_one_line(command: str, capsys) -> None:  # type: ignore[no-untyped-def]
    linreg = CHECKPOINT_DIR / "linreg.safetensors"
    if not linreg.exists():
        pytest.skip("no shipped linreg checkpoint")
    args = [command, "--checkpoint", str(linreg)] + (["--quick"] if command == "compare" else [])
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "needs a model trained on density tasks" in err
    assert "Traceback" not in err

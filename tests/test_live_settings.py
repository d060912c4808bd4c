"""The live-training settings: bounds, defaults and the configs made from them."""

from __future__ import annotations

import pytest

from iclebm.models.energy import EnergyConfig, EnergyTransformer
from iclebm.ui.jobs.live_settings import BOUNDS, make_configs

TINY = {"n_layer": 1, "d_model": 8, "batch_size": 2, "context_len": 4, "chains": 1, "langevin_steps": 2}




@pytest.fixture()
def base_model() -> EnergyTransformer:
    m = EnergyTransformer(EnergyConfig(n_layer=1, n_head=2, d_model=8, max_context=6))
    m.card = {"name": "base", "task": {"n_components": 2, "mean_std": 2.0, "component_std": [0.3, 0.4]},
              "box": [-10, 10],
              "sampler": {"steps": 50, "step_size": 0.05, "noise_std": 0.3, "grad_clip": 20.0}}
    for p in m.parameters():  # as the app's cached, inference-only model
        p.requires_grad_(False)
    return m.eval()


def test_make_configs_clamps_absurd_values() -> None:
    train, model_cfg = make_configs("scratch", {"lr": 10.0, "batch_size": 10_000, "chains": 0, "d_model": 7,
                                                "n_layer": 99, "noise_std": -1.0})
    assert train.lr == BOUNDS["lr"][1] and train.batch_size == BOUNDS["batch_size"][1] and train.chains == 1
    assert train.noise_std == 0.0
    assert model_cfg is not None and model_cfg.n_layer == BOUNDS["n_layer"][1]
    assert model_cfg.d_model % model_cfg.n_head == 0 and model_cfg.d_model >= BOUNDS["d_model"][0]
    with pytest.raises(ValueError):
        make_configs("finetune", {})
    with pytest.raises(ValueError):
        make_configs("sideways", {})


def test_finetune_config_follows_the_base_card(base_model: EnergyTransformer) -> None:
    train, model_cfg = make_configs("finetune", {"context_len": 32}, base_model)
    assert model_cfg is None
    assert train.task["n_components"] == 2 and train.box == (-10.0, 10.0)
    assert train.context_len == 6  # never longer than the base model reads













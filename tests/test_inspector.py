"""Attention inspector and leave-one-out influence: equal to naive references in float64."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from lib_helpers import random_model

from iclebm import ContextTooLongError
from iclebm.probes.inspector import (
    check_in_box,
    dominant_point,
    format_attention_tables,
    format_influence_table,
    grid_attention,
    grid_influence,
    influence,
    inspect_query,
    leave_one_out_contexts,
    parse_points,
    parse_query,
    reduce_heads,
)

TOL = 1e-10


def points(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 4.0 * torch.randn(*shape, generator=g, dtype=torch.float64)


def naive_attention(model, query: torch.Tensor, context: torch.Tensor) -> list[torch.Tensor]:
    """Append each query to the context, run the plain causal forward and read the last row of
    every layer's attention matrix, with a softmax written out here (not the model's code)."""
    b, m, _ = query.shape
    n = context.shape[1]
    seq = torch.cat([context[:, None].expand(b, m, n, 2), query[:, :, None]], dim=2).reshape(b * m, n + 1, 2)
    h = model._embed(seq)
    out = []
    for block in model.blocks:
        q, k, _ = block._qkv(h)  # (B*M, H, N+1, hd)
        last = (q[:, :, -1:] @ k.transpose(-1, -2))[:, :, 0] / math.sqrt(q.shape[-1])  # (B*M, H, N+1)
        e = torch.exp(last - last.max(-1, keepdim=True).values)
        out.append((e / e.sum(-1, keepdim=True)).reshape(b, m, -1, n + 1).transpose(1, 2))
        h, _, _ = block.forward_context(h)
    return out


@pytest.mark.parametrize("n", [0, 1, 3, 9])
def test_attention_equals_naive_last_row(n):
    model = random_model(seed=n, n_layer=3, n_head=2)
    b, m = 2, 5
    q, ctx = points(b, m, 2, seed=1), points(b, n, 2, seed=2)
    got = model.attention(q, ctx)
    ref = naive_attention(model, q, ctx)
    assert len(got) == model.config.n_layer
    for layer, (w, r) in enumerate(zip(got, ref, strict=True)):
        assert w.shape == (b, model.config.n_head, m, n + 1)
        assert torch.allclose(w, r, atol=TOL, rtol=0), layer
        assert torch.allclose(w.sum(-1), torch.ones_like(w.sum(-1)), atol=1e-12)
    # the attention is not trivially uniform in this model, so the comparison has teeth
    if n >= 3:
        assert got[0].max() > 2.0 / (n + 1)


def test_attention_chunked_equals_unchunked_and_default_path_is_untouched():
    model = random_model(seed=4)
    q, ctx = points(1, 13, 2), points(1, 6, 2, seed=5)
    whole, parts = model.attention(q, ctx), model.attention(q, ctx, chunk=4)
    for a, c in zip(whole, parts, strict=True):
        assert torch.allclose(a, c, atol=1e-14, rtol=0)
    # asking for weights does not change the energies the query path computes
    cache = model.encode_context(ctx)
    w: list[torch.Tensor] = []
    with_w = model.learned_energy_cached(q[:, None], cache, weights=w)
    assert torch.equal(with_w, model.learned_energy_cached(q[:, None], cache)) and len(w) == 2


def test_empty_context_only_self_weight():
    model = random_model()
    w = model.attention(points(1, 4, 2), torch.zeros(1, 0, 2, dtype=torch.float64))
    assert all(x.shape == (1, 2, 4, 1) and torch.equal(x, torch.ones_like(x)) for x in w)
    insp = inspect_query(model, np.zeros((0, 2)), (1.0, 2.0))
    assert insp.weights.shape == (2, 2, 1) and np.all(insp.weights == 1.0)
    assert insp.influence.shape == (0,)
    assert "empty context" in format_influence_table(insp)


def test_attention_prefix_masked_weights_are_zero_on_hidden_keys():
    model = random_model(seed=3)
    ctx = points(1, 6, 2, seed=1)
    cache = model.encode_context(ctx)
    w: list[torch.Tensor] = []
    q = points(1, 1, 4, 2, seed=2)
    model.learned_energy_cached(q, cache, torch.tensor([0, 2, 6]), weights=w)
    rows = w[0].reshape(1, 2, 3, 4, 7)  # (B, H, P, M, N+1)
    assert torch.all(rows[:, :, 0, :, :6] == 0) and torch.all(rows[:, :, 1, :, 2:6] == 0)
    ref = naive_attention(model, q[:, 0], ctx[:, :2])[0]  # prefix length 2
    assert torch.allclose(rows[:, :, 1, :, [0, 1, 6]], ref, atol=TOL, rtol=0)


def test_leave_one_out_contexts_order():
    ctx = torch.arange(8, dtype=torch.float64).reshape(1, 4, 2)
    loo = leave_one_out_contexts(ctx)
    assert loo.shape == (1, 4, 3, 2)
    assert torch.equal(loo[0, 2], ctx[0, [0, 1, 3]])
    assert leave_one_out_contexts(ctx[:, :1]).shape == (1, 1, 0, 2)


@pytest.mark.parametrize("n", [1, 2, 7])
def test_influence_equals_n_separate_calls(n):
    model = random_model(seed=n, length_scales=[0.5, 0.7, 0.9, 1.1])
    b, m = 2, 6
    q, ctx = points(b, m, 2, seed=3), points(b, n, 2, seed=4)
    got = influence(model, q, ctx)
    assert got.shape == (b, m, n)
    full = model.energy(q, ctx)
    for j in range(n):
        without = torch.cat([ctx[:, :j], ctx[:, j + 1 :]], dim=1)
        assert torch.allclose(got[:, :, j], model.energy(q, without) - full, atol=TOL, rtol=0), j
    assert got.abs().max() > 1e-3  # points do matter in this model


def test_influence_empty_context_and_bad_input():
    model = random_model()
    assert influence(model, points(1, 3, 2), torch.zeros(1, 0, 2, dtype=torch.float64)).shape == (1, 3, 0)
    with pytest.raises(ContextTooLongError):
        influence(model, points(1, 3, 2), points(1, 17, 2))
    with pytest.raises(ValueError):
        influence(model, points(1, 3, 3), points(1, 2, 2))


def test_inspect_query_and_tables():
    model = random_model(seed=5)
    pts = points(4, 2, seed=6).numpy()
    insp = inspect_query(model, pts, (0.5, -1.0))
    assert insp.weights.shape == (2, 2, 5)
    np.testing.assert_allclose(insp.weights.sum(-1), 1.0, atol=1e-12)
    ref = influence(model, torch.tensor([[[0.5, -1.0]]], dtype=torch.float64), torch.from_numpy(pts)[None])
    np.testing.assert_allclose(insp.influence, ref[0, 0].detach().numpy(), atol=1e-12)
    text = format_attention_tables(insp)
    assert text.count("layer ") == 2 and "head 2" in text and "self (query)" in text
    assert f"{insp.weights[1, 0, 3]:8.4f}" in text
    assert format_influence_table(insp).count("\n") == 1 + 4


def test_grid_maps_equal_pointwise_calls():
    model = random_model(seed=6)
    pts = points(5, 2, seed=7).numpy()
    box, r = (-6.0, 6.0), 7
    att = grid_attention(model, pts, box, r)
    infl = grid_influence(model, pts, box, r)
    assert att.shape == (2, 2, r, r, 6) and infl.shape == (r, r, 5)
    # cell (row 2 = y, column 5 = x)
    from iclebm.grid import grid_axis

    xs = grid_axis(box, r)
    insp = inspect_query(model, pts, (xs[5], xs[2]))
    np.testing.assert_allclose(att[:, :, 2, 5], insp.weights, atol=1e-5)
    np.testing.assert_allclose(infl[2, 5], insp.influence, atol=1e-5)
    owner = dominant_point(reduce_heads(att, layer=None, head=None))
    assert owner.shape == (r, r) and owner.max() <= 5
    assert np.array_equal(dominant_point(reduce_heads(att, 1, 0)), att[1, 0].argmax(-1))


def test_reduce_heads_mean_is_a_distribution():
    w = np.random.default_rng(0).dirichlet(np.ones(4), size=(3, 2, 5))  # (L, H, M, K)
    np.testing.assert_allclose(reduce_heads(w, None, None).sum(-1), 1.0)
    np.testing.assert_allclose(reduce_heads(w, 2, None), w[2].mean(0))
    with pytest.raises(ValueError):
        dominant_point(np.zeros((3, 0)))


def test_parse_points_and_query():
    np.testing.assert_array_equal(parse_points("1,2; -3.5, 4 ;"), [[1, 2], [-3.5, 4]])
    assert parse_points("  ").shape == (0, 2)
    np.testing.assert_array_equal(parse_query("(0.5, -1)"), [0.5, -1.0])
    for bad in ["1,2;3", "1,a", "1,2,3", "nan,1", "1,inf"]:
        with pytest.raises(ValueError):
            parse_points(bad)
    with pytest.raises(ValueError, match="outside the box"):
        check_in_box(np.array([13.0, 0.0]), (-12.0, 12.0))
    check_in_box(np.array([[12.0, -12.0]]), (-12.0, 12.0))


def test_inspector_refuses_a_model_without_query_attention():
    from iclebm.models.mixture import MixtureConfig, MixtureDensityTransformer

    mdn = MixtureDensityTransformer(MixtureConfig(n_layer=1, n_head=2, d_model=16, n_components=2))
    with pytest.raises(ValueError, match="needs an energy transformer"):
        inspect_query(mdn, np.zeros((2, 2)), (0.0, 0.0))
    assert influence(mdn, points(1, 3, 2).float(), points(1, 2, 2).float()).shape == (1, 3, 2)

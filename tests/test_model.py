"""EnergyTransformer: the cached query path equals the naive re-run, causality, gradients, input checks."""

from __future__ import annotations

import math

import pytest
import torch
from lib_helpers import naive_energy as naive
from lib_helpers import random_model

from iclebm import ContextTooLongError
from iclebm.models.energy import EnergyConfig

TOL = 1e-9


def points(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 4.0 * torch.randn(*shape, generator=g, dtype=torch.float64)


def test_random_model_attention_is_not_trivial():
    model = random_model()
    q = points(1, 5, 2)
    e1 = model.energy(q, points(1, 6, 2, seed=1))
    e2 = model.energy(q, points(1, 6, 2, seed=2))
    assert (e1 - e2).abs().max() > 1e-2  # the context matters
    assert e1.std() > 1e-2  # and so does the query


@pytest.mark.parametrize("n", [0, 1, 2, 5, 13])
@pytest.mark.parametrize("b,m", [(1, 1), (3, 7)])
def test_energy_cached_equals_naive(n, b, m):
    model = random_model(seed=n)
    q, ctx = points(b, m, 2, seed=1), points(b, n, 2, seed=2)
    cached = model.energy(q, ctx)
    assert cached.shape == (b, m)
    assert torch.allclose(cached, naive(model, q, ctx), atol=TOL, rtol=0)


def test_energy_chunked_equals_unchunked():
    model = random_model()
    q, ctx = points(2, 11, 2), points(2, 4, 2, seed=3)
    assert torch.allclose(model.energy(q, ctx, chunk=3), model.energy(q, ctx), atol=1e-12, rtol=0)


@pytest.mark.parametrize("n", [0, 1, 6])
def test_energy_all_prefixes_equals_naive(n):
    model = random_model(seed=1)
    b, m = 2, 5
    q, ctx = points(b, m, 2, seed=4), points(b, n, 2, seed=5)
    out = model.energy_all_prefixes(q, ctx)
    assert out.shape == (b, n + 1, m)
    for k in range(n + 1):
        assert torch.allclose(out[:, k], naive(model, q, ctx[:, :k]), atol=TOL, rtol=0), k


def test_energy_at_prefixes_arbitrary_lengths():
    model = random_model(seed=2)
    q, ctx = points(3, 4, 2, seed=6), points(3, 7, 2, seed=7)
    lengths = [5, 0, 7, 7, 1, 3]  # unsorted, repeated, both ends
    out = model.energy_at_prefixes(q, ctx, lengths, chunk=3)
    assert out.shape == (3, len(lengths), 4)
    for p, k in enumerate(lengths):
        assert torch.allclose(out[:, p], naive(model, q, ctx[:, :k]), atol=TOL, rtol=0), k


def test_learned_energy_cached_distinct_queries_per_group():
    model = random_model(seed=3)
    b, n, m = 2, 6, 3
    ctx = points(b, n, 2, seed=8)
    lengths = torch.tensor([4, 0, 6, 2])
    q = points(b, len(lengths), m, 2, seed=9)  # every prefix group has its own queries
    cache = model.encode_context(ctx)
    out = model.learned_energy_cached(q, cache, lengths)
    assert out.shape == (b, len(lengths), m)
    for p, k in enumerate(lengths.tolist()):
        ref = naive(model, q[:, p], ctx[:, :k], model.learned_energies)
        assert torch.allclose(out[:, p], ref, atol=TOL, rtol=0)
    # default lengths: the full context
    full = model.learned_energy_cached(q, cache)
    assert torch.allclose(full[:, 1], naive(model, q[:, 1], ctx, model.learned_energies), atol=TOL, rtol=0)


def test_learned_energy_cached_rejects_bad_lengths():
    model = random_model()
    cache = model.encode_context(points(1, 3, 2))
    with pytest.raises(ValueError, match="prefix lengths"):
        model.learned_energy_cached(points(1, 1, 2, 2), cache, torch.tensor([4]))
    with pytest.raises(ValueError, match="lengths must have shape"):
        model.learned_energy_cached(points(1, 2, 2, 2), cache, torch.tensor([1]))


def test_energies_are_causal():
    model = random_model(seed=4)
    seq = points(2, 8, 2, seed=10)
    base = model.energies(seq)
    for j in range(8):
        pert = seq.clone()
        pert[:, j] += torch.tensor([1.5, -0.7], dtype=torch.float64)
        out = model.energies(pert)
        assert torch.equal(out[:, :j], base[:, :j]), f"position < {j} changed"
        assert (out[:, j] - base[:, j]).abs().min() > 1e-6
        if j < 7:  # later positions see x_j
            assert (out[:, j + 1 :] - base[:, j + 1 :]).abs().max() > 1e-6


def test_query_gradients_match_finite_differences():
    model = random_model(seed=5)
    ctx = points(2, 4, 2, seed=11)
    q = points(2, 3, 2, seed=12).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: model.energy(x, ctx), (q,), eps=1e-6, atol=1e-6)
    assert torch.autograd.gradcheck(
        lambda x: model.energy_all_prefixes(x, ctx), (q,), eps=1e-6, atol=1e-6, fast_mode=True
    )
    # and the cached gradient equals the naive one
    (g_c,) = torch.autograd.grad(model.energy(q, ctx).sum(), q)
    (g_n,) = torch.autograd.grad(naive(model, q, ctx).sum(), q)
    assert torch.allclose(g_c, g_n, atol=TOL, rtol=0)


def test_context_gradients_match_finite_differences():
    model = random_model(seed=6)
    q = points(1, 3, 2, seed=13)
    ctx = points(1, 4, 2, seed=14).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda c: model.energy(q, c), (ctx,), eps=1e-6, atol=1e-6)


def test_parameter_gradients_through_query_path_equal_naive():
    model = random_model(seed=7)
    q, ctx = points(2, 5, 2, seed=15), points(2, 4, 2, seed=16)
    model.zero_grad()
    model.energy(q, ctx).pow(2).sum().backward()
    cached = {k: p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad()
    naive(model, q, ctx).pow(2).sum().backward()
    for k, p in model.named_parameters():
        assert torch.allclose(cached[k], p.grad, atol=1e-8, rtol=1e-8), k
    # with the context cache frozen, every parameter still gets a gradient through the queries
    model.zero_grad()
    cache = model.encode_context(ctx).detach()
    model.energy_cached(q[:, None], cache).sum().backward()
    for k, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().max() > 0, k


def test_energy_scale_and_base_term():
    model = random_model(seed=8)
    q, ctx = points(1, 4, 2), points(1, 3, 2, seed=1)
    f = model.energy(q, ctx) - model.base_energy(q)
    model.config.energy_scale = 2.5
    assert torch.allclose(model.energy(q, ctx), 2.5 * (f + model.base_energy(q)), atol=1e-12)
    assert torch.allclose(model.base_energy(q), (q * q).sum(-1) / (2 * 4.0**2))


def test_float32_cached_equals_naive_to_rounding():
    model = random_model(seed=9, dtype=torch.float32, max_context=32)
    q, ctx = points(2, 50, 2).float(), points(2, 32, 2, seed=1).float()
    with torch.no_grad():
        e_c, e_n = model.energy(q, ctx), naive(model, q, ctx)
    assert (e_c - e_n).abs().max() <= 1e-5 * max(1.0, float(e_n.abs().max()))


# ---- input validation ----------------------------------------------------------------------


def test_bad_shapes_raise_value_error():
    model = random_model()
    ctx = points(1, 3, 2)
    with pytest.raises(ValueError, match=r"query must have shape \(batch, points, 2\)"):
        model.energy(points(4, 2), ctx)
    with pytest.raises(ValueError, match="query must have shape"):
        model.energy(points(1, 4, 3), ctx)
    with pytest.raises(ValueError, match="context must have shape"):
        model.energy(points(1, 4, 2), points(3, 2))
    with pytest.raises(ValueError, match="seq must have shape"):
        model.energies(points(5, 2))
    with pytest.raises(ValueError, match="batch"):
        model.energy(points(2, 4, 2), points(3, 3, 2))


def test_empty_query_raises():
    model = random_model()
    with pytest.raises(ValueError, match="empty"):
        model.energy(torch.zeros(1, 0, 2, dtype=torch.float64), points(1, 3, 2))
    with pytest.raises(ValueError, match="empty"):
        model.energy_all_prefixes(torch.zeros(1, 0, 2, dtype=torch.float64), points(1, 3, 2))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_inputs_raise(bad):
    model = random_model()
    q, ctx = points(1, 4, 2), points(1, 3, 2)
    q_bad, ctx_bad = q.clone(), ctx.clone()
    q_bad[0, 1, 0] = bad
    ctx_bad[0, 2, 1] = bad
    with pytest.raises(ValueError, match="query contains NaN or inf"):
        model.energy(q_bad, ctx)
    with pytest.raises(ValueError, match="context contains NaN or inf"):
        model.energy(q, ctx_bad)
    with pytest.raises(ValueError, match="NaN or inf"):
        model.energies(ctx_bad)
    with pytest.raises(ValueError, match="NaN or inf"):
        model.energy_all_prefixes(q, ctx_bad)


def test_context_too_long():
    model = random_model(max_context=8)
    with pytest.raises(ContextTooLongError, match="at most 8"):
        model.energy(points(1, 2, 2), points(1, 9, 2))
    with pytest.raises(ValueError):  # ContextTooLongError is a ValueError too
        model.energy_all_prefixes(points(1, 2, 2), points(1, 9, 2))
    with pytest.raises(ContextTooLongError):
        model.energies(points(1, 10, 2))
    model.energy(points(1, 2, 2), points(1, 8, 2))  # the limit itself is fine
    model.energies(points(1, 9, 2))


def test_config_validation_and_round_trip():
    cfg = EnergyConfig(n_layer=2, n_head=2, d_model=8)
    assert EnergyConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="divisible"):
        EnergyConfig(n_head=3, d_model=8)
    with pytest.raises(ValueError, match="unknown"):
        EnergyConfig.from_dict({"bogus": 1})
    with pytest.raises(ValueError, match="energy_scale"):
        EnergyConfig(energy_scale=0.0)


# ---- per-context-length temperatures ----------------------------------------------------------

SCALES = [0.5, 1.3, 2.0, 0.7, 1.1]  # knots at n = 0, 1, 2, 4, 8


def test_scale_for_lengths_interpolates_in_log2_1_plus_n():
    cfg = EnergyConfig(n_layer=1, n_head=2, d_model=8, energy_scale=2.0, length_scales=SCALES)
    knots = EnergyConfig.length_knots(len(SCALES))
    assert knots == [0, 1, 2, 4, 8]
    s = cfg.scale_for_lengths(torch.tensor(knots + [3, 20]))
    assert torch.allclose(s[:5], 2.0 * torch.tensor(SCALES, dtype=torch.float64))
    t = (math.log2(4) - math.log2(3)) / (math.log2(5) - math.log2(3))  # n = 3 lies between knots 2 and 4
    assert float(s[5]) == pytest.approx(2.0 * (2.0 + (0.7 - 2.0) * t))
    assert float(s[6]) == pytest.approx(2.0 * 1.1)  # constant past the last knot
    with pytest.raises(ValueError):
        EnergyConfig(length_scales=[1.0, -1.0])


def test_length_scaled_energies_cached_equal_naive():
    """With length_scales, E(q | x_<n) uses the scale for n context points on every path."""
    model = random_model(seed=11, length_scales=SCALES)
    q, ctx = points(2, 4, 2, seed=20), points(2, 10, 2, seed=21)
    out = model.energy_all_prefixes(q, ctx)
    for k in range(11):
        assert torch.allclose(out[:, k], naive(model, q, ctx[:, :k]), atol=TOL, rtol=0), k
        assert torch.allclose(model.energy(q, ctx[:, :k]), out[:, k], atol=TOL, rtol=0), k
    lengths = [3, 0, 9]
    assert torch.allclose(model.energy_at_prefixes(q, ctx, lengths), out[:, lengths], atol=TOL, rtol=0)
    # and the scale really is applied: E = s_n * (f + base)
    plain = random_model(seed=11)
    s = model.config.scale_for_lengths(torch.arange(11))
    ref = plain.energy_all_prefixes(q, ctx)
    assert torch.allclose(out, s[None, :, None] * ref, atol=TOL, rtol=0)


def test_energy_all_prefixes_accepts_array_like_context():
    model = random_model(seed=12, dtype=torch.float32)
    q, ctx = points(1, 3, 2).float(), points(1, 4, 2, seed=1).float()
    out = model.energy_all_prefixes(q.numpy(), ctx.numpy())
    assert out.shape == (1, 5, 3)


def test_shared_queries_equal_expanded_queries():
    # the film strip passes one (B, 1, M, 2) query set for all prefixes; projecting it once
    # and broadcasting must equal feeding P explicit copies
    model = random_model(seed=11)
    g = torch.Generator().manual_seed(5)
    context = 3 * torch.randn(2, 6, 2, generator=g, dtype=torch.float64)
    query = 3 * torch.randn(2, 1, 9, 2, generator=g, dtype=torch.float64)
    lengths = torch.tensor([0, 2, 3, 6])
    cache = model.encode_context(context)
    shared = model.energy_cached(query, cache, lengths)
    expanded = model.energy_cached(query.expand(-1, 4, -1, -1).contiguous(), cache, lengths)
    assert shared.shape == (2, 4, 9)
    assert torch.allclose(shared, expanded, atol=1e-12, rtol=0)


@pytest.mark.parametrize("n", [0, 3])
def test_fourier_embedding_cached_equals_naive_and_is_shift_invariant_kernel(n):
    """With Fourier features the query path still equals the plain forward; the features' dot
    product is sum_f cos(w_f . (x - x')), a function of x - x' only."""
    model = random_model(seed=7, fourier_features=6, fourier_freqs=(0.5, 3.0))
    q, ctx = points(2, 5, 2, seed=8), points(2, n, 2, seed=9)
    assert torch.allclose(model.energy(q, ctx), naive(model, q, ctx), atol=TOL, rtol=0)
    w = model.fourier_w.double()
    assert w.shape == (6, 2) and float(w.norm(dim=1).min()) == pytest.approx(0.5, rel=1e-6)

    def feats(x):
        phase = x @ w.T
        return torch.cat([phase.sin(), phase.cos()], -1)

    x, y, shift = points(1, 4, 2, seed=10)[0], points(1, 4, 2, seed=11)[0], torch.tensor([0.7, -1.3])
    k1 = (feats(x) * feats(y)).sum(-1)
    k2 = (feats(x + shift) * feats(y + shift)).sum(-1)
    assert torch.allclose(k1, k2, atol=1e-12)
    assert torch.allclose(k1, torch.cos((x - y) @ w.T).sum(-1), atol=1e-12)

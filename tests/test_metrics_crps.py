"""CRPS kernel against properscoring (standard) and scoringrules (fair), plus edge cases."""

from __future__ import annotations

import itertools

import numpy as np
import properscoring as ps
import pytest
import scoringrules as sr
import torch

import benchmark.metrics.crps as crps_kernel
from benchmark.metrics import crps_ensemble, ensemble_statistics, mae, rmse, spread_skill_ratio

MEMBER_COUNTS = [1, 2, 3, 5, 10, 16, 17, 33, 64, 65, 100]  # 65 and 100 use the torch.sort path


def _data(m: int, shape=(23, 41), seed: int = 0, ties: bool = True) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed + m)
    obs = rng.normal(size=shape) * 3.0 + 1.0
    ens = rng.normal(size=(m, *shape)) * rng.uniform(0.1, 4.0, size=shape) + 1.0
    if ties:
        ens[:, :5] = np.round(ens[:, :5])  # ties among members
        ens[:, 5:8] = ens[:1, 5:8]  # all members equal
        obs[:, 8:10] = np.round(ens[0, :, 8:10])  # observation equal to a member
    return obs, ens


@pytest.mark.parametrize("n", range(1, 13))
def test_sorting_network_sorts_all_zero_one_inputs(n: int) -> None:
    # 0-1 principle: a comparator network sorts every input iff it sorts every 0/1 input.
    x = np.array(list(itertools.product([0, 1], repeat=n)), dtype=np.int8).T.copy()
    for a, b in crps_kernel.sorting_network(n):
        lo, hi = np.minimum(x[a], x[b]), np.maximum(x[a], x[b])
        x[a], x[b] = lo, hi
    assert (np.diff(x, axis=0) >= 0).all()


@pytest.mark.parametrize("m", MEMBER_COUNTS)
def test_standard_matches_properscoring(m: int) -> None:
    obs, ens = _data(m)
    got = crps_ensemble(torch.from_numpy(obs), torch.from_numpy(ens))
    assert got.dtype == torch.float64 and got.shape == obs.shape
    np.testing.assert_allclose(got.numpy(), ps.crps_ensemble(obs, ens, axis=0), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("m", [mm for mm in MEMBER_COUNTS if mm > 1])
def test_fair_matches_scoringrules(m: int) -> None:
    obs, ens = _data(m)
    got = crps_ensemble(obs, ens, estimator="fair")
    ref = sr.crps_ensemble(obs, ens, m_axis=0, estimator="fair")
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10, atol=1e-12)


def test_standard_matches_scoringrules_nrg() -> None:
    obs, ens = _data(10)
    np.testing.assert_allclose(
        crps_ensemble(obs, ens).numpy(), sr.crps_ensemble(obs, ens, m_axis=0, estimator="nrg"), rtol=1e-10
    )


def test_fair_minus_standard_is_spread_over_2m() -> None:
    # standard = fair + E|X - X'| / (2M) with E|X-X'| the fair (M(M-1)) mean pairwise distance.
    obs, ens = _data(7, ties=False)
    pair = np.abs(ens[:, None] - ens[None, :]).sum((0, 1)) / (7 * 6)
    diff = crps_ensemble(obs, ens) - crps_ensemble(obs, ens, estimator="fair")
    np.testing.assert_allclose(diff.numpy(), pair / (2 * 7), rtol=1e-10)


@pytest.mark.parametrize("estimator", ["standard", "fair"])
def test_float32_stays_float32_and_is_accurate(estimator: str) -> None:
    obs, ens = _data(10, shape=(64, 257))
    ref = crps_ensemble(obs, ens, estimator=estimator).numpy()
    got = crps_ensemble(torch.from_numpy(obs.astype(np.float32)), torch.from_numpy(ens.astype(np.float32)), estimator=estimator)
    assert got.dtype == torch.float32
    scale = np.abs(ens).max()
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.parametrize("estimator", ["standard", "fair"])
@pytest.mark.parametrize("m", [1, 2, 3, 10, 17, 65])
def test_float32_at_brightness_temperatures_matches_float64_to_1e5(m: int, estimator: str) -> None:
    # 280 K +- 15 K in float32: without centring, the rank-weighted sum of raw members cancels
    # from ~280 K to ~15 K and the error reached 6.7e-5 relative (issue 18). Ties, members equal
    # to the observation, M = 1 and NaN observations are included.
    if estimator == "fair" and m == 1:
        pytest.skip("the fair estimator needs two members")
    rng = np.random.default_rng(m)
    obs = (280 + 15 * rng.standard_normal((64, 512))).astype(np.float32)
    ens = (obs[None] + 15 * rng.standard_normal((m, 64, 512))).astype(np.float32)
    ens[:, :4] = np.round(ens[:, :4])  # ties
    ens[:, 4] = obs[4]  # every member equals the observation
    obs[5, :17] = np.nan
    got = crps_ensemble(torch.from_numpy(obs), torch.from_numpy(ens), estimator=estimator).numpy()
    obs64, ens64 = obs.astype(np.float64), ens.astype(np.float64)
    if estimator == "standard":
        ref = ps.crps_ensemble(obs64, ens64, axis=0)
    else:
        ref = sr.crps_ensemble(obs64, ens64, m_axis=0, estimator="fair")
    nan = np.isnan(obs)
    assert np.isnan(got[nan]).all() and np.isfinite(got[~nan]).all()
    # relative to the typical CRPS (~10 K): rows where every member equals the observation have
    # a true CRPS of 0, where a relative error is undefined
    np.testing.assert_allclose(got[~nan], ref[~nan], rtol=1e-5, atol=1e-5 * np.nanmean(np.abs(ref)))


def test_infinite_observation_gives_infinite_crps() -> None:
    obs = torch.tensor([np.inf, -np.inf, 1.0])
    ens = torch.zeros(3, 3)
    got = crps_ensemble(obs, ens)
    assert got[0] == np.inf and got[1] == np.inf and got[2] == 1.0


@pytest.mark.parametrize("member_dim", [0, 1, 2, -1, -2, -3])
def test_member_dim_anywhere(member_dim: int) -> None:
    obs, ens = _data(6, shape=(13, 17))
    expected = ps.crps_ensemble(obs, ens, axis=0)
    moved = np.moveaxis(ens, 0, member_dim)
    got = crps_ensemble(obs, moved, member_dim=member_dim)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=1e-12)
    # non-contiguous tensor views work too
    got_view = crps_ensemble(torch.from_numpy(obs), torch.from_numpy(ens).movedim(0, member_dim), member_dim=member_dim)
    np.testing.assert_allclose(got_view.numpy(), expected, rtol=1e-10, atol=1e-12)


def test_many_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    # Force tiny chunks so chunk boundaries (and a ragged last chunk) are exercised.
    monkeypatch.setattr(crps_kernel, "_CPU_CHUNK_MIN", 7)
    monkeypatch.setattr(crps_kernel, "_CPU_CHUNK_MAX", 7)
    obs, ens = _data(10, shape=(5, 11))
    got = crps_ensemble(obs, ens, estimator="fair")
    np.testing.assert_allclose(got.numpy(), sr.crps_ensemble(obs, ens, m_axis=0, estimator="fair"), rtol=1e-10)


def test_single_member_is_absolute_error() -> None:
    obs, ens = _data(1)
    np.testing.assert_allclose(crps_ensemble(obs, ens).numpy(), np.abs(ens[0] - obs), rtol=1e-12)
    with pytest.raises(ValueError, match="at least 2 members"):
        crps_ensemble(obs, ens, estimator="fair")


def test_scalar_event_shape_and_empty() -> None:
    got = crps_ensemble(torch.tensor(0.5), torch.tensor([0.0, 1.0, 2.0]))
    assert got.shape == () and got.item() == pytest.approx(float(ps.crps_ensemble(0.5, [0.0, 1.0, 2.0])))
    assert crps_ensemble(torch.zeros(0, 3), torch.zeros(4, 0, 3)).shape == (0, 3)


def test_nan_observations_give_nan_only_there() -> None:
    obs, ens = _data(10)
    obs[3, 4] = np.nan
    obs[7, :] = np.nan
    got = crps_ensemble(obs, ens).numpy()
    nan = np.isnan(obs)
    assert np.isnan(got[nan]).all()
    np.testing.assert_allclose(got[~nan], ps.crps_ensemble(obs, ens, axis=0)[~nan], rtol=1e-10)


@pytest.mark.parametrize("m", [1, 10, 100])
def test_nan_member_raises_with_count(m: int) -> None:
    obs, ens = _data(m)
    ens[0, 2, 3] = np.nan
    ens[-1, 4, 5] = np.nan
    obs[4, 5] = np.nan  # a NaN member under a NaN observation still counts
    with pytest.raises(ValueError, match="2 NaN member value"):
        crps_ensemble(obs, ens)


def test_infinite_members_are_not_reported_as_nan() -> None:
    obs, ens = _data(4)
    ens[0, 0, 0] = np.inf
    got = crps_ensemble(obs, ens)  # must not raise: inf is not a missing member
    assert not np.isfinite(got[0, 0].item())
    np.testing.assert_allclose(got.numpy()[1:], ps.crps_ensemble(obs[1:], ens[:, 1:], axis=0), rtol=1e-10)


def test_shape_mismatch_names_both_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(5, 3, 5\)"):
        crps_ensemble(np.zeros((3, 4)), np.zeros((5, 3, 5)))
    with pytest.raises(ValueError, match="member_dim"):
        crps_ensemble(np.zeros(3), np.zeros((5, 3)), member_dim=2)
    with pytest.raises(ValueError, match="estimator"):
        crps_ensemble(np.zeros(3), np.zeros((5, 3)), estimator="pwm")
    with pytest.raises(ValueError, match="no members"):
        crps_ensemble(np.zeros(3), np.zeros((0, 3)))


def test_integer_inputs_use_default_float_dtype() -> None:
    got = crps_ensemble(torch.tensor([1, 2]), torch.tensor([[0, 2], [1, 3]]))
    assert got.dtype == torch.get_default_dtype()
    np.testing.assert_allclose(got.numpy(), ps.crps_ensemble([1, 2], [[0, 2], [1, 3]], axis=0), rtol=1e-6)


def test_ensemble_statistics() -> None:
    obs, ens = _data(10)
    obs[0, 0] = np.nan
    stats = ensemble_statistics(obs, ens, member_dim=0, estimator="fair")
    assert set(stats) == {"crps", "abs_error", "sq_error", "ens_var", "valid"}
    valid = np.isfinite(obs)
    np.testing.assert_array_equal(stats["valid"].numpy(), valid)
    mean = ens.mean(0)
    np.testing.assert_allclose(stats["abs_error"].numpy()[valid], np.abs(mean - obs)[valid], rtol=1e-12)
    np.testing.assert_allclose(stats["sq_error"].numpy()[valid], ((mean - obs) ** 2)[valid], rtol=1e-12)
    np.testing.assert_allclose(stats["ens_var"].numpy(), ens.var(0, ddof=1), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(stats["crps"].numpy()[valid], crps_ensemble(obs, ens, estimator="fair").numpy()[valid])
    one = ensemble_statistics(obs, ens[:1])
    assert torch.isnan(one["ens_var"]).all()


def test_reductions_from_sums() -> None:
    assert mae(6.0, 3) == 2.0
    assert rmse(12.0, 3) == 2.0
    # A reliable ensemble (obs and members exchangeable) has a spread-skill ratio of ~1.
    rng = np.random.default_rng(0)
    m, n = 5, 200_000
    centre = rng.normal(size=n)
    obs = centre + rng.normal(size=n)
    ens = centre + rng.normal(size=(m, n))
    s = ensemble_statistics(obs, ens)
    ssr = spread_skill_ratio(float(s["ens_var"].sum()), float(s["sq_error"].sum()), m)
    assert ssr == pytest.approx(1.0, abs=0.02)
    np.testing.assert_allclose(spread_skill_ratio(np.array([2.0, 8.0]), np.array([2.0, 2.0]), 1), [np.sqrt(2), np.sqrt(8)])

"""Elementwise ensemble scores and the reductions that turn their sums into metrics.

Scores are returned elementwise so the caller can sum them per bootstrap unit (e.g. per
(sample, channel) row or per storm) over the valid pixels; every metric below is then a function
of such sums, which is what makes it bootstrappable from sufficient statistics.
"""

from __future__ import annotations

from typing import Any

import torch

from .crps import as_tensor, crps_ensemble

__all__ = ["ensemble_statistics", "mae", "rmse", "spread_skill_ratio"]


def ensemble_statistics(
    obs: Any, ens: Any, *, member_dim: int = 0, estimator: str = "standard"
) -> dict[str, torch.Tensor]:
    """Elementwise scores of an ensemble forecast, each of shape ``S`` (the shape of ``obs``).

    Keys: ``crps`` (see :func:`crps_ensemble`), ``abs_error`` = |ens mean - obs|, ``sq_error``
    = (ens mean - obs)^2, ``ens_var`` = unbiased member variance (NaN when M == 1), ``valid``
    = obs is finite. Scores at invalid points are NaN or meaningless: mask with ``valid``
    before summing.
    """
    crps = crps_ensemble(obs, ens, estimator=estimator, member_dim=member_dim)
    ens_t = as_tensor(ens)
    obs_t = as_tensor(obs, device=ens_t.device).to(crps.dtype)
    with torch.no_grad():
        members = ens_t.detach().to(crps.dtype)
        dim = member_dim % members.ndim
        m = members.shape[dim]
        mean = members.mean(dim)
        err = mean - obs_t
        if m > 1:
            var = members.var(dim, correction=1)
        else:
            var = torch.full_like(mean, float("nan"))
        return {
            "crps": crps,
            "abs_error": err.abs(),
            "sq_error": err.square(),
            "ens_var": var,
            "valid": torch.isfinite(obs_t),
        }


def mae(sum_abs_error: Any, count: Any) -> Any:
    """Mean absolute error of the ensemble mean from sums over the same points."""
    return sum_abs_error / count


def rmse(sum_sq_error: Any, count: Any) -> Any:
    """Root mean squared error of the ensemble mean from sums over the same points."""
    return (sum_sq_error / count) ** 0.5


def spread_skill_ratio(sum_var: Any, sum_sq_err: Any, m: int) -> Any:
    """Spread-skill ratio sqrt((M+1)/M * mean var) / sqrt(mean sq err), from sums.

    Both sums must run over the same points, so the counts cancel. The (M+1)/M factor corrects
    for the finite ensemble: for a reliable M-member ensemble the expected squared error of its
    mean is (M+1)/M times the expected (unbiased) member variance, so the ratio is ~1.
    Works on floats, numpy arrays (e.g. bootstrap replicates) and tensors.
    """
    if m < 1:
        raise ValueError(f"ensemble size must be >= 1, got {m}")
    return ((m + 1) / m * sum_var / sum_sq_err) ** 0.5

"""A complete, small reconstruction entry: copy this file to start your own.

It predicts every channel of the target source as a Gaussian per pixel, from what an entry may
see of a test window: the mean value of each channel over the other available sources, the
target's land mask at that pixel, and the target sensor's characteristics (``characs``). The mean
and the log standard deviation are linear in those features, one small linear model per channel,
trained with ``benchmark.training.fit_in_context`` on the closed-form CRPS of a Gaussian. Its
ensemble is ``n`` draws from that Gaussian. It has no spatial context, so it is a floor, not a
contender. Run it with

    python -m benchmark check-entry examples/reconstruction_entry.py:GaussianPerChannel
    python -m benchmark run --task tc_primed --profile smoke --entry examples/reconstruction_entry.py:GaussianPerChannel

or register it from your own package in ``pyproject.toml``:

    [project.entry-points."benchmark.entries"]
    gaussian_per_channel = "my_package.my_module:GaussianPerChannel"

The batch format (every key, shape and unit) is in ``docs/batch_formats.md``; what the harness
expects back is in ``docs/entries.md``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn

from benchmark.contracts import EntryMetadata, RunContext
from benchmark.training import fit_in_context, move_to_device


def observed(source: dict[str, torch.Tensor]) -> torch.Tensor:
    """[B] bool: the source is present in the sample and has at least one finite value."""
    return source["avail"].bool() & torch.isfinite(source["values"]).flatten(1).any(1)


def features(batch: dict[str, Any], targets: list[str]) -> torch.Tensor:
    """[B, F, H, W] per-pixel features of each sample's target grid (``F = C + 1 + K + 1``).

    ``targets[i]`` names the source to predict for sample ``i``; its values are never read (in a
    test batch they are NaN), only its land mask and characteristics, which entries may see.
    """
    sources = batch["sources"]
    first = sources[targets[0]]
    b, c = first["values"].shape[:2]
    h, w = (int(x) for x in batch["target_size"]) if "target_size" in batch else (
        max(sources[t]["values"].shape[-2] for t in set(targets)), max(sources[t]["values"].shape[-1] for t in set(targets)))
    device = first["values"].device
    # the mean of each channel over every other available source (each in its own normalized units)
    total = torch.zeros(b, c, device=device)
    count = torch.zeros(b, 1, device=device)
    for key, src in sources.items():
        use = observed(src) & torch.tensor([t != key for t in targets], device=device)
        means = torch.nan_to_num(src["values"].nanmean((-1, -2)), nan=0.0)
        total += torch.where(use[:, None], means, torch.zeros_like(means))
        count += use[:, None].to(total.dtype)
    inputs = total / count.clamp_min(1)  # no other source: 0, the target's training mean
    land = torch.zeros(b, 1, h, w, device=device)
    characs = torch.zeros(b, first["characs"].shape[-1], device=device)
    for i, t in enumerate(targets):
        lm = torch.nan_to_num(sources[t]["landmask"][i], nan=0.0)[:h, :w]  # NaN = padding or outside the swath
        land[i, 0, : lm.shape[0], : lm.shape[1]] = lm
        characs[i] = torch.nan_to_num(sources[t]["characs"][i], nan=0.0)
    per_sample = torch.cat([inputs, characs, torch.ones(b, 1, device=device)], 1)[:, :, None, None].expand(-1, -1, h, w)
    return torch.cat([per_sample[:, :c], land, per_sample[:, c:]], 1)


def gaussian_crps(mean: torch.Tensor, std: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """CRPS of N(mean, std²) at ``y``, elementwise (closed form)."""
    z = (y - mean) / std
    pdf = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    return std * (z * (2 * torch.special.ndtr(z) - 1) + 2 * pdf - 1 / math.sqrt(math.pi))


class PerChannelGaussian(nn.Module):
    """For each channel c: mean_c = a_c·f, log std_c = b_c·f, on the per-pixel features f."""

    def __init__(self, channels: int, n_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(channels, n_features, 2))

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = torch.einsum("bfhw,cfk->bckhw", feats, self.weight)
        return out[:, :, 0], out[:, :, 1].clamp(-6, 3).exp()


class GaussianPerChannel:
    metadata: ClassVar[EntryMetadata] = EntryMetadata(
        name="gaussian_per_channel",
        version="1",
        family="reconstruction",
        description="per-channel Gaussian from the other sources' channel means, land mask and sensor (example entry)",
        inputs=("pmw",),
        pretraining="none (supervised on self-chosen targets of the training windows)",
    )
    # Profiles are data: every knob the entry reads from ctx.hparams, per profile (the keys of
    # benchmark.training.FitConfig, plus eval_batch_size, which the harness reads for test batches).
    profiles: ClassVar[dict[str, dict[str, Any]]] = {
        "smoke": {"steps": 40, "batch_size": 8, "lr": 0.05, "eval_batch_size": 8},
        "mini": {"steps": 400, "batch_size": 16, "lr": 0.02, "eval_batch_size": 8},
        "paper": {"steps": 4000, "batch_size": 32, "lr": 0.01, "eval_batch_size": 8},
    }

    def __init__(self) -> None:
        self.model: PerChannelGaussian | None = None
        self.device = torch.device("cpu")

    def fit(self, train: torch.utils.data.Dataset, val: torch.utils.data.Dataset, ctx: RunContext) -> None:
        info = ctx.task_info
        channels, characs = int(info["channels"]), int(info["characs_dim"])
        self.device = ctx.device
        self.model = PerChannelGaussian(channels, channels + 1 + characs + 1).to(ctx.device)

        def loss(model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
            # Training windows name no target (tc_primed): choose one observed source per sample,
            # hide it from the features, and score the prediction of its values.
            keys = sorted(batch["sources"])
            ok = torch.stack([observed(batch["sources"][k]) for k in keys], 1)  # [B, S]
            pick = torch.multinomial(ok.float() + 1e-9, 1).squeeze(1).tolist()  # global RNG: seeded by fit
            targets = [keys[j] for j in pick]
            mean, std = model(features(batch, targets))
            y = torch.full_like(mean, float("nan"))
            for i, t in enumerate(targets):
                v = batch["sources"][t]["values"][i]
                y[i, :, : v.shape[-2], : v.shape[-1]] = v[:, : y.shape[-2], : y.shape[-1]]
            valid = torch.isfinite(y)
            return gaussian_crps(mean[valid], std[valid], y[valid]).mean()

        # fit_in_context: steps/lr/batch size from ctx.hparams, checkpoint in ctx.checkpoint_dir/fit
        # (shared by the cells with the same training window, so they reuse one fit), and
        # ctx.record_fit, so the throughput table shows this stage. Pass the task's collate.
        fit_in_context(ctx, self.model, loss, train, stage="fit", collate_fn=ctx.collate, desc="fit gaussian_per_channel")
        self.model.eval()

    @torch.no_grad()
    def sample(self, batch: dict[str, Any], n: int, generator: torch.Generator) -> torch.Tensor:
        """[n, B, C, H, W] in the target's normalized units, finite everywhere ((H, W) = target_size)."""
        if self.model is None:
            raise RuntimeError("fit() must run before sample()")
        mean, std = self.model(features(move_to_device(batch, self.device), list(batch["target"])))
        noise = torch.randn((n, *mean.shape), generator=generator).to(mean.device)
        return torch.nan_to_num(mean + std * noise, nan=0.0).float().cpu()

    def parameter_count(self) -> int:
        return 0 if self.model is None else sum(p.numel() for p in self.model.parameters())

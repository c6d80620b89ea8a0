"""The 3D U-Net of S4 (after Rustowicz et al. 2019): time is convolved like space.

Layout with base width ``f`` (input ``[B, C, T, H, W]``; every conv is 3×3×3, BatchNorm3d,
LeakyReLU):

    stem[modality]  C → 4f → 4f           (modality-specific: S4's y_r / y_o)
    pool            T/2, H/2, W/2
    en4             4f → 8f → 8f           (shared from here on)
    pool            T/4, H/4, W/4
    bottleneck      8f → 16f → 16f         = the encoder output f_r / f_o (S4's contrastive space)
    up              2× nearest up-sampling + conv → 8f at T/2
    dc4             [8f ⊕ en4] → 8f → 8f, up-sampling + conv → 4f at T
    dc3             [4f ⊕ stem] → 4f → 2f  = the decoder output h: per-(t, h, w) features

Borders and padding carry no signal a position code could use: convolutions pad by replicating
the edge (not with zeros), inputs are padded to multiples of 4 by replication, and dates that are
not valid (padding of a short series, or dates an augmentation drops) are re-filled after every
block with the nearest earlier valid date of the same sample, so no zero-filled date is ever
convolved into a valid one. Replicas still enter BatchNorm's batch statistics (as copies of real
dates), which reweights them slightly but marks nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


def conv_bn_act(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(cin, cout, 3, padding=1, padding_mode="replicate", bias=False), nn.BatchNorm3d(cout),
                         nn.LeakyReLU(0.01, inplace=True))


def double_conv(cin: int, mid: int, cout: int) -> nn.Sequential:
    return nn.Sequential(conv_bn_act(cin, mid), conv_bn_act(mid, cout))


def up(cin: int, cout: int) -> nn.Sequential:
    """2× nearest up-sampling then a 3×3×3 convolution. Rustowicz et al. use a stride-2 transposed
    convolution, whose last row / column / date receives fewer kernel taps than the others: a mark
    on the far borders that a position shortcut can use. This pair has the same receptive field
    and no such mark (a constant input stays constant)."""
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                         nn.Conv3d(cin, cout, 3, padding=1, padding_mode="replicate", bias=False),
                         nn.BatchNorm3d(cout), nn.LeakyReLU(0.01, inplace=True))


def fill_invalid_dates(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``x [B, C, T, H, W]`` with every date where ``valid [B, T]`` is False replaced by the nearest
    earlier valid date of its sample (dates before the first valid one take the first valid one).

    Pure tensor ops (no host synchronisation); a sample with no valid date is left as it is.
    """
    b, c, t = x.shape[:3]
    steps = torch.arange(t, device=x.device).expand(b, t)
    latest = torch.where(valid, steps, torch.full_like(steps, -1)).cummax(1).values
    first = valid.int().argmax(1, keepdim=True).expand(b, t)
    idx = torch.where(latest < 0, first, latest)
    return x.gather(2, idx[:, None, :, None, None].expand_as(x))


def pool_dates(valid: torch.Tensor) -> torch.Tensor:
    """Validity of dates after a stride-2 pooling in time: a pooled date is valid if either is."""
    return F.max_pool1d(valid[:, None].float(), 2, ceil_mode=True)[:, 0].bool()


@dataclass
class Encoded:
    """What the encoder hands to the decoder: skips, the bottleneck and their date validity."""

    stem: torch.Tensor  # [B, 4f, T', H', W']
    en4: torch.Tensor  # [B, 8f, T'/2, H'/2, W'/2]
    bottleneck: torch.Tensor  # [B, 16f, T'/4, H'/4, W'/4]: S4's encoder output
    valid: tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # [B, T'], [B, T'/2], [B, T'/4]
    size: tuple[int, int, int]  # the input's (T, H, W) before padding


class UNet3D(nn.Module):
    """Modality-specific stems + shared 3D U-Net; ``forward`` returns ``[B, 2f, T, H, W]`` features."""

    def __init__(self, in_channels: Mapping[str, int], base: int):
        super().__init__()
        f = base
        self.stems = nn.ModuleDict({m: double_conv(c, 4 * f, 4 * f) for m, c in in_channels.items()})
        self.pool = nn.MaxPool3d(2)
        self.en4 = double_conv(4 * f, 8 * f, 8 * f)
        # center[:2] is the bottleneck (encoder output), center[2] the first up-sampling
        self.center = nn.Sequential(conv_bn_act(8 * f, 16 * f), conv_bn_act(16 * f, 16 * f), up(16 * f, 8 * f))
        self.dc4 = nn.Sequential(double_conv(16 * f, 8 * f, 8 * f), up(8 * f, 4 * f))
        self.dc3 = double_conv(8 * f, 4 * f, 2 * f)
        self.feature_dim = 2 * f
        self.encoder_dim = 16 * f

    def encode(self, x: torch.Tensor, modality: str, mask: torch.Tensor | None = None) -> Encoded:
        """``x [B, T, C, H, W]`` (the SITS layout), ``mask [B, T]`` valid dates (None: all)."""
        b, t, c, h, w = x.shape
        x = x.permute(0, 2, 1, 3, 4)
        pads = [(-s) % 4 for s in (w, h, t)]
        if pads[0] or pads[1]:
            x = F.pad(x.reshape(b, c * t, h, w), (0, pads[0], 0, pads[1]), mode="replicate").reshape(b, c, t, h + pads[1], w + pads[0])
        valid = torch.ones(b, t, dtype=torch.bool, device=x.device) if mask is None else mask.to(x.device).bool()
        v1 = F.pad(valid, (0, pads[2]), value=False)
        x = fill_invalid_dates(F.pad(x, (0, 0, 0, 0, 0, pads[2])), v1)
        v2, v3 = pool_dates(v1), pool_dates(pool_dates(v1))
        s3 = fill_invalid_dates(self.stems[modality](x), v1)
        s4 = fill_invalid_dates(self.en4(self.pool(s3)), v2)
        bottleneck = fill_invalid_dates(self.center[:2](self.pool(s4)), v3)
        return Encoded(s3, s4, bottleneck, (v1, v2, v3), (t, h, w))

    def decode(self, e: Encoded) -> torch.Tensor:
        """The decoder output ``[B, 2f, T, H, W]`` (cropped back to the input's size)."""
        y = fill_invalid_dates(self.center[2](e.bottleneck), e.valid[1])
        y = fill_invalid_dates(self.dc4(torch.cat([y, e.en4], 1)), e.valid[0])
        y = self.dc3(torch.cat([y, e.stem], 1))
        t, h, w = e.size
        return y[:, :, :t, :h, :w]

    def forward(self, x: torch.Tensor, modality: str, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x [B, T, C, H, W]`` → features ``[B, 2f, T, H, W]``."""
        return self.decode(self.encode(x, modality, mask))


def masked_time_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x [B, D, T, H, W]`` averaged over valid dates (``mask [B, T]``) → ``[B, D, H, W]``."""
    m = mask.to(x.dtype)[:, None, :, None, None]
    return (x * m).sum(2) / m.sum(2).clamp_min(1)


class MaskedBatchNorm(nn.BatchNorm1d):
    """BatchNorm over rows ``[N, D]`` where only rows with ``weight [N] = True`` count in the batch
    statistics (S4's sampled positions include a few that fall outside a view's crop)."""

    def forward(self, x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        if weight is None or not self.training:
            return super().forward(x)
        x = x.float()  # statistics in float32 even under bf16 autocast (a bf16 count of 3144 rows is 3136)
        w = weight.float()[:, None]
        n = w.sum().clamp_min(1)
        mean = (x * w).sum(0) / n
        var = ((x - mean) ** 2 * w).sum(0) / n
        with torch.no_grad():
            momentum = 0.1 if self.momentum is None else self.momentum
            unbiased = var * n / (n - 1).clamp_min(1)
            self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), momentum)
            self.running_var.lerp_(unbiased.detach().to(self.running_var.dtype), momentum)
            self.num_batches_tracked.add_(1)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias


class ProjectionHead(nn.Module):
    """S4's g: two 1×1×1 convolutions with BatchNorm + LeakyReLU between them, ending in the plain
    second convolution (the contrastive loss normalises its output).

    It runs on the gathered positions only (rows ``[N, D]``): a 1×1×1 convolution on a position is
    a linear map of its feature vector, so this is the paper's head evaluated where the loss needs it.
    """

    def __init__(self, dim: int, out: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, out, bias=False)
        self.bn = MaskedBatchNorm(out)
        self.act = nn.LeakyReLU(0.01)
        self.fc2 = nn.Linear(out, out)

    def forward(self, rows: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        return self.fc2(self.act(self.bn(self.fc1(rows), weight)))


class Segmenter(nn.Module):
    """Backbone + 1×1×1 class head, time reduced by a masked mean: logits ``[B, K, H, W]``."""

    def __init__(self, backbone: UNet3D, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Conv3d(backbone.feature_dim, num_classes, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, modality: str) -> torch.Tensor:
        return masked_time_mean(self.head(self.backbone(x, modality, mask)), mask)

"""The 3D U-Net of S4 (after Rustowicz et al. 2019): time is convolved like space.

Layout with base width ``f`` (input ``[B, C, T, H, W]``; every conv is 3×3×3, BatchNorm3d,
LeakyReLU):

    stem[modality]  C → 4f → 4f           (modality-specific: S4's y_r / y_o)
    pool            T/2, H/2, W/2
    en4             4f → 8f → 8f           (shared from here on: S4's y_c and decoder h)
    pool            T/4, H/4, W/4
    center          8f → 16f → 16f, transposed conv → 8f at T/2
    dc4             [8f ⊕ en4] → 8f → 8f, transposed conv → 4f at T
    dc3             [4f ⊕ stem] → 4f → 2f  = the per-(t, h, w) feature map

Series of any length and patches of any size work: inputs are zero-padded to multiples of 4 and
outputs cropped back; padded dates are excluded later by the time mask.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.nn import functional as F


def conv_bn_act(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm3d(cout), nn.LeakyReLU(0.01, inplace=True))


def double_conv(cin: int, mid: int, cout: int) -> nn.Sequential:
    return nn.Sequential(conv_bn_act(cin, mid), conv_bn_act(mid, cout))


def up(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose3d(cin, cout, 3, stride=2, padding=1, output_padding=1, bias=False),
                         nn.BatchNorm3d(cout), nn.LeakyReLU(0.01, inplace=True))


class UNet3D(nn.Module):
    """Modality-specific stems + shared 3D U-Net; ``forward`` returns ``[B, 2f, T, H, W]`` features."""

    def __init__(self, in_channels: Mapping[str, int], base: int):
        super().__init__()
        f = base
        self.stems = nn.ModuleDict({m: double_conv(c, 4 * f, 4 * f) for m, c in in_channels.items()})
        self.pool = nn.MaxPool3d(2)
        self.en4 = double_conv(4 * f, 8 * f, 8 * f)
        self.center = nn.Sequential(conv_bn_act(8 * f, 16 * f), conv_bn_act(16 * f, 16 * f), up(16 * f, 8 * f))
        self.dc4 = nn.Sequential(double_conv(16 * f, 8 * f, 8 * f), up(8 * f, 4 * f))
        self.dc3 = double_conv(8 * f, 4 * f, 2 * f)
        self.feature_dim = 2 * f

    def forward(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        """``x [B, T, C, H, W]`` (the SITS layout) → features ``[B, 2f, T, H, W]``."""
        b, t, c, h, w = x.shape
        x = x.permute(0, 2, 1, 3, 4)
        pads = [(-s) % 4 for s in (w, h, t)]
        x = F.pad(x, (0, pads[0], 0, pads[1], 0, pads[2]))
        s3 = self.stems[modality](x)
        s4 = self.en4(self.pool(s3))
        y = self.dc4(torch.cat([self.center(self.pool(s4)), s4], 1))
        y = self.dc3(torch.cat([y, s3], 1))
        return y[:, :, :t, :h, :w]


def masked_time_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x [B, D, T, H, W]`` averaged over valid dates (``mask [B, T]``) → ``[B, D, H, W]``."""
    m = mask.to(x.dtype)[:, None, :, None, None]
    return (x * m).sum(2) / m.sum(2).clamp_min(1)


class ProjectionHead(nn.Module):
    """Two 1×1×1 Conv3d with BatchNorm + LeakyReLU (used only in contrastive pre-training)."""

    def __init__(self, dim: int, out: int):
        super().__init__()
        self.net = nn.Sequential(nn.Conv3d(dim, out, 1, bias=False), nn.BatchNorm3d(out), nn.LeakyReLU(0.01, inplace=True),
                                 nn.Conv3d(out, out, 1, bias=False), nn.BatchNorm3d(out), nn.LeakyReLU(0.01, inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Segmenter(nn.Module):
    """Backbone + 1×1×1 class head, time reduced by a masked mean: logits ``[B, K, H, W]``."""

    def __init__(self, backbone: UNet3D, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Conv3d(backbone.feature_dim, num_classes, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, modality: str) -> torch.Tensor:
        return masked_time_mean(self.head(self.backbone(x, modality)), mask)

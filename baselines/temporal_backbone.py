"""The temporal segmentation backbone of the single-image SSL baselines (SeCo, GSSL, CaCo).

The S4 paper (§5.3) gives the contrastive baselines "a ConvLSTM decoder to integrate over the
temporal dimension": their single-image ResNet encodes every date, a ConvLSTM runs over time, and
a decoder brings the result back to H × W. The layout here is the U-ConvLSTM pattern:

    per date      stem[modality] → ResNet stages (BasicBlocks; stage k at 1/(s·2^k) resolution)
    over time     ConvLSTM on the deepest stage; the output is each sample's hidden state at its
                  LAST VALID date (padded dates leave the state untouched, wherever they are)
    skips         shallower stages averaged over the valid dates
    decoder       bilinear ×2 up-sampling, concat skip, conv-BN-ReLU, …, 1×1 conv to classes

Only valid dates go through the encoder (padded frames are never encoded), so padding changes
neither the output nor the BatchNorm batch statistics. Convolutions run in channels-last memory
format: with the small widths of the CPU profiles, oneDNN's backward pass is ~2.5× faster so. The stem is modality-specific and the
ResNet trunk shared, as in S4's own backbone, so one pre-training serves both modalities.

Departures from torchvision's ResNet, on purpose: a 3 × 3 stride-``stem_stride`` stem without
max-pooling (CIFAR-style) because patches are 32–128 px and crop parcels a few pixels wide, and
widths/blocks per stage are profile data (ResNet-18 = widths (64, 128, 256, 512), blocks 2).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F


def conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Subsample(nn.Module):
    """Every ``stride``-th pixel. Followed by a 1 × 1 conv it equals ResNet's 1 × 1 stride-2
    shortcut conv, whose channels-last backward corrupts the heap in oneDNN (torch 2.13 CPU,
    inputs ≥ 64 px)."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.stride == 1 else x[:, :, :: self.stride, :: self.stride]


class BasicBlock(nn.Module):
    """ResNet basic block: two 3 × 3 convs with BatchNorm and an identity (or 1 × 1) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            Subsample(stride), nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x), inplace=True)


class DateEncoder(nn.Module):
    """Single-image ResNet with one stem per input kind; ``forward`` returns every stage's map."""

    def __init__(self, in_channels: Mapping[str, int], widths: Sequence[int], blocks: int = 1, stem_stride: int = 1):
        super().__init__()
        widths = [int(w) for w in widths]
        self.widths, self.stem_stride = widths, int(stem_stride)
        self.stems = nn.ModuleDict({m: conv_bn_relu(c, widths[0], self.stem_stride) for m, c in in_channels.items()})
        stages, cin = [], widths[0]
        for i, w in enumerate(widths):
            stages.append(nn.Sequential(*[BasicBlock(cin if j == 0 else w, w, 2 if (i > 0 and j == 0) else 1) for j in range(int(blocks))]))
            cin = w
        self.stages = nn.ModuleList(stages)
        self.out_dim = widths[-1]
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor, modality: str) -> list[torch.Tensor]:
        """``x [N, C, H, W]`` → feature maps of every stage, shallow to deep."""
        y = self.stems[modality](x.contiguous(memory_format=torch.channels_last))
        feats = []
        for stage in self.stages:
            y = stage(y)
            feats.append(y)
        return feats

    def embed(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        """Global-average-pooled deepest features ``[N, out_dim]`` (the SSL methods' image vector)."""
        return self(x, modality)[-1].mean((2, 3))


def valid_frame_index(mask: torch.Tensor) -> torch.Tensor:
    """Flat indices (into ``B·T``) of the valid dates of ``mask [B, T]``, in row-major order.

    Why: selecting the valid frames by a boolean mask has a data-dependent size, so on a GPU it
    waits for the device (``nonzero``). Computed where the mask still lives on the host (in the
    collate function, or before ``predict`` moves the batch), the index travels with the batch and
    the device never has to report back.
    """
    return mask.bool().flatten().nonzero().squeeze(1)


def encode_frames(encoder: DateEncoder, x: torch.Tensor, mask: torch.Tensor, modality: str,
                  frame_index: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Encode the valid dates of ``x [B, T, C, H, W]`` only; padded dates get zero features.

    ``frame_index`` is ``valid_frame_index(mask)`` computed on the host (no device sync); without
    it the index is computed here from ``mask`` (one sync). Returns one ``[B, T, C_k, H_k, W_k]``
    map per stage.
    """
    b, t = x.shape[:2]
    index = valid_frame_index(mask) if frame_index is None else frame_index.to(x.device)
    feats = encoder(x.flatten(0, 1).index_select(0, index), modality)
    return [f.new_zeros((b * t, *f.shape[1:])).index_copy(0, index, f).unflatten(0, (b, t)) for f in feats]


def masked_mean_over_time(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x [B, T, C, H, W]`` averaged over valid dates (``mask [B, T]``) → ``[B, C, H, W]``."""
    m = mask.to(x.dtype)[:, :, None, None, None]
    return (x * m).sum(1) / m.sum(1).clamp_min(1)


class ConvLSTMCell(nn.Module):
    """One 3 × 3 convolution over [input, h] gives the gates i, f, o and the candidate g."""

    def __init__(self, cin: int, hidden: int, kernel: int = 3):
        super().__init__()
        self.hidden = hidden
        self.conv = nn.Conv2d(cin + hidden, 4 * hidden, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        h, c = state
        i, f, o, g = self.conv(torch.cat([x, h], 1)).chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class ConvLSTM(nn.Module):
    """ConvLSTM over ``[B, T, C, H, W]`` returning the hidden state at each sample's last valid date.

    Zero initial state. At a padded date (``mask`` False) a sample's state is carried over
    unchanged, so the final state is the one after its last valid date, whether the padding is
    at the end, at the start or in between.
    """

    def __init__(self, cin: int, hidden: int, kernel: int = 3):
        super().__init__()
        self.cell = ConvLSTMCell(cin, hidden, kernel)
        self.hidden = hidden

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, _, h, w = x.shape
        hs = x.new_zeros((b, self.hidden, h, w))
        cs = torch.zeros_like(hs)
        keep = mask.bool()[:, :, None, None, None]
        for k in range(t):  # a date no sample has is computed and discarded: cheaper than asking the device
            h_new, c_new = self.cell(x[:, k], (hs, cs))
            hs, cs = torch.where(keep[:, k], h_new, hs), torch.where(keep[:, k], c_new, cs)
        return hs


class TemporalSegmenter(nn.Module):
    """Per-date encoder + ConvLSTM (last valid state) + skip-connected decoder → ``[B, K, H, W]``."""

    def __init__(self, encoder: DateEncoder, num_classes: int, hidden: int):
        super().__init__()
        self.encoder = encoder
        widths = encoder.widths
        self.lstm = ConvLSTM(widths[-1], hidden)
        ups, cur = [], hidden
        for i in reversed(range(len(widths) - 1)):
            ups.append(conv_bn_relu(cur + widths[i], widths[i]))
            cur = widths[i]
        self.ups = nn.ModuleList(ups)
        self.head = nn.Conv2d(cur, num_classes, 1)
        self.to(memory_format=torch.channels_last)

    takes_frame_index = True  # forward accepts ``frame_index`` (see ``encode_frames``)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, dates: torch.Tensor | None, modality: str,
                frame_index: torch.Tensor | None = None) -> torch.Tensor:
        h, w = x.shape[-2:]
        feats = encode_frames(self.encoder, x, mask, modality, frame_index)
        y = self.lstm(feats[-1], mask)
        for up, skip in zip(self.ups, reversed(feats[:-1]), strict=True):
            s = masked_mean_over_time(skip, mask)
            y = up(torch.cat([F.interpolate(y, size=s.shape[-2:], mode="bilinear", align_corners=False), s], 1))
        logits = self.head(y)
        if logits.shape[-2:] != (h, w):
            logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
        return logits


class UpsampleDecoder(nn.Module):
    """``[B, C, h, w]`` → ``[B, K, H, W]`` by ×2 bilinear up-sampling steps, each followed by conv-BN-ReLU."""

    def __init__(self, cin: int, width: int, num_classes: int, factor: int):
        super().__init__()
        steps = max(0, int(factor).bit_length() - 1)  # log2 of a power-of-two factor
        blocks, cur = [], cin
        for _ in range(steps):
            blocks.append(conv_bn_relu(cur, width))
            cur = width
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Conv2d(cur, num_classes, 1)
        self.to(memory_format=torch.channels_last)

    def forward(self, y: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        for block in self.blocks:
            y = block(F.interpolate(y, scale_factor=2.0, mode="bilinear", align_corners=False))
        y = self.head(y)
        if y.shape[-2:] != tuple(size):
            y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
        return y

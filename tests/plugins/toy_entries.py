"""Entries and tasks used by the harness tests (loaded through module:Class specs)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from benchmark.contracts import EntryMetadata, RunContext
from benchmark.mock import MockReconstructionTask, MockSegmentationTask


class SegTask(MockSegmentationTask):
    """The mock segmentation task, exposed as a task spec for `--task tests.plugins.toy_entries:SegTask`."""


class ReconTask(MockReconstructionTask):
    pass


class InputMeanEntry:
    """Reconstruction: the mean of the other available sources (scaled by a fitted gain) plus noise."""

    metadata: ClassVar[EntryMetadata] = EntryMetadata("input_mean", "1", "reconstruction", "mean of the inputs plus fitted noise")
    profiles: ClassVar[dict[str, dict[str, Any]]] = {"smoke": {}, "mini": {}}

    def __init__(self) -> None:
        self.gain, self.sigma = 1.0, 1.0

    def _mean_input(self, batch: dict[str, Any]) -> torch.Tensor:
        vals = torch.stack([s["values"] for s in batch["sources"].values()])  # [S, B, C, H, W], target hidden as NaN
        return torch.nan_to_num(vals.nanmean(0), nan=0.0)

    def fit(self, train: Any, val: Any, ctx: RunContext) -> None:
        loader = torch.utils.data.DataLoader(train, batch_size=8, collate_fn=ctx.collate)
        xs, ys = [], []
        for batch in loader:
            target = torch.stack([batch["sources"][t]["values"][i] for i, t in enumerate(batch["target"])])
            hidden = {**batch, "sources": {k: {**v, "values": v["values"].clone()} for k, v in batch["sources"].items()}}
            for i, t in enumerate(batch["target"]):
                hidden["sources"][t]["values"][i] = float("nan")
            x = self._mean_input(hidden)
            ok = torch.isfinite(target)
            xs.append(x[ok])
            ys.append(target[ok])
        x, y = torch.cat(xs), torch.cat(ys)
        self.gain = float((x * y).sum() / (x * x).sum().clamp_min(1e-8))
        self.sigma = float((y - self.gain * x).std())

    def sample(self, batch: dict[str, Any], n: int, generator: torch.Generator) -> torch.Tensor:
        mean = self.gain * self._mean_input(batch)
        return mean + self.sigma * torch.randn((n, *mean.shape), generator=generator)


class WrongShapeEntry:
    metadata: ClassVar[EntryMetadata] = EntryMetadata("wrong_shape", "1", "segmentation", "returns logits of the wrong shape")
    profiles: ClassVar[dict[str, dict[str, Any]]] = {"smoke": {}, "mini": {}}

    def pretrain(self, unlabeled: Any, ctx: RunContext) -> None:
        pass

    def finetune(self, labeled: Any, modality: str, ctx: RunContext) -> None:
        pass

    def predict(self, batch: dict[str, Any], modality: str) -> torch.Tensor:
        b, _, _, h, w = batch[modality].shape
        return torch.zeros(b, 2, h, w)


class NaNEntry(WrongShapeEntry):
    metadata: ClassVar[EntryMetadata] = EntryMetadata("nan_logits", "1", "segmentation", "returns NaN logits")

    def predict(self, batch: dict[str, Any], modality: str) -> torch.Tensor:
        b, _, _, h, w = batch[modality].shape
        return torch.full((b, 4, h, w), float("nan"))


class NoMetadata:
    profiles: ClassVar[dict[str, dict[str, Any]]] = {"smoke": {}}


class ConstantEntry(WrongShapeEntry):
    """Predicts class 2 everywhere: a degenerate predictor the tables must flag."""

    metadata: ClassVar[EntryMetadata] = EntryMetadata("constant_b", "1", "segmentation", "class 2 everywhere")

    def predict(self, batch: dict[str, Any], modality: str) -> torch.Tensor:
        b, _, _, h, w = batch[modality].shape
        logits = torch.zeros(b, 4, h, w)
        logits[:, 2] = 1.0
        return logits


class DeterministicEntry(InputMeanEntry):
    """Every member equals the fitted mean: spread-skill is 0 by construction."""

    metadata: ClassVar[EntryMetadata] = EntryMetadata("deterministic_mean", "1", "reconstruction", "the fitted mean, n identical members")

    def sample(self, batch: dict[str, Any], n: int, generator: torch.Generator) -> torch.Tensor:
        mean = self.gain * self._mean_input(batch)
        return mean.expand(n, *mean.shape).clone()


class VoidTestTask(MockSegmentationTask):
    """The mock task with every test pixel void: mIoU is undefined there."""

    def resolve_data(self, data_root: Any, profile: str) -> tuple[dict[str, list], Any]:
        data, identity = super().resolve_data(data_root, profile)
        for item in data["test"]:
            item["label"] = torch.full_like(item["label"], self.ignore_index)
        return data, identity

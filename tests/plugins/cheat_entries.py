"""Entries that try to cheat the harness, each built on an honest entry of the same model.

Every cheat falls back to its honest parent when the cheat finds nothing, so "the cheat scores
exactly what the honest entry scores" is the test that the harness gave it nothing to find.
"""

from __future__ import annotations

import gc
from typing import Any, ClassVar

import torch

from benchmark.contracts import EntryMetadata, RunContext
from tests.plugins.toy_entries import InputMeanEntry


def _public(obj: Any) -> dict[str, Any]:
    """Public attributes of ``obj`` (what an entry would try first)."""
    out = {}
    for name in dir(obj):
        if name.startswith("_"):
            continue
        try:
            value = getattr(obj, name)
        except Exception:  # noqa: BLE001
            continue
        if not callable(value) or hasattr(value, "__getitem__"):
            out[name] = value
    return out


def find_datasets(root: Any, depth: int = 4) -> list[Any]:
    """Objects reachable from ``root`` by public attributes that look like datasets of samples."""
    found, seen, frontier = [], {id(root)}, [root]
    for _ in range(depth):
        nxt = []
        for obj in frontier:
            for value in _public(obj).values():
                if id(value) in seen or isinstance(value, (str, bytes, int, float, torch.Tensor)):
                    continue
                seen.add(id(value))
                if hasattr(value, "__getitem__") and hasattr(value, "__len__") and not isinstance(value, dict):
                    found.append(value)
                nxt.append(value)
        frontier = nxt
    return found


class HonestCentroid:
    """Segmentation: nearest class centroid of each pixel's temporal mean (no pre-training)."""

    metadata: ClassVar[EntryMetadata] = EntryMetadata("honest_centroid", "1", "segmentation", "nearest class centroid per pixel")
    profiles: ClassVar[dict[str, dict[str, Any]]] = {"smoke": {}, "mini": {}}

    def __init__(self) -> None:
        self.centroids: torch.Tensor | None = None
        self.k = 0

    @staticmethod
    def _features(sample: dict[str, Any], modality: str) -> torch.Tensor:
        x = sample[modality].float()  # [(B,) T, C, H, W]
        return x.mean(-4)

    def pretrain(self, unlabeled: Any, ctx: RunContext) -> None:
        pass

    def _fit(self, samples: list[dict[str, Any]], modality: str, k: int, ignore: int) -> None:
        feats = torch.stack([self._features(s, modality) for s in samples])  # [N, C, H, W]
        labels = torch.stack([s["label"] for s in samples])
        c = feats.shape[1]
        flat, lab = feats.permute(0, 2, 3, 1).reshape(-1, c), labels.reshape(-1)
        self.k = k
        self.centroids = torch.stack([flat[lab == j].mean(0) if (lab == j).any() else torch.full((c,), 1e6) for j in range(k)])
        del ignore

    def finetune(self, labeled: Any, modality: str, ctx: RunContext) -> None:
        info = ctx.task_info
        self._fit([labeled[i] for i in range(len(labeled))], modality, int(info["num_classes"]), int(info["ignore_index"]))

    def predict(self, batch: dict[str, Any], modality: str) -> torch.Tensor:
        assert self.centroids is not None
        f = self._features(batch, modality).permute(0, 2, 3, 1)  # [B, H, W, C]
        d = ((f[..., None, :] - self.centroids) ** 2).sum(-1)  # [B, H, W, K]
        return (-d).permute(0, 3, 1, 2)


class PeekLabel(HonestCentroid):
    """Returns the one-hot of the test label when the batch holds it."""

    metadata: ClassVar[EntryMetadata] = EntryMetadata("cheat_peek_label", "1", "segmentation", "reads batch['label'] in predict")

    def predict(self, batch: dict[str, Any], modality: str) -> torch.Tensor:
        if "label" in batch:
            lab = batch["label"].clamp(0, self.k - 1)
            return torch.nn.functional.one_hot(lab, self.k).permute(0, 3, 1, 2).float() * 100
        return super().predict(batch, modality)


class OverwriteBatch(HonestCentroid):
    """Writes its prediction into the label (if any) and garbage into every tensor of the batch."""

    metadata: ClassVar[EntryMetadata] = EntryMetadata("cheat_overwrite", "1", "segmentation", "edits its batch in place")

    def predict(self, batch: dict[str, Any], modality: str) -> torch.Tensor:
        logits = super().predict(batch, modality)
        if "label" in batch:
            batch["label"].copy_(logits.argmax(1))
        for value in list(batch.values()):
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                value.fill_(0.0)
        batch["id"] = ["same"] * len(batch.get("id", []))
        return logits


class WalkToReader(HonestCentroid):
    """In the 10 % cells, looks for the full training set (with labels) behind its view, and for
    labels behind the unlabeled pre-training view; trains on whatever labelled samples it finds."""

    metadata: ClassVar[EntryMetadata] = EntryMetadata("cheat_walk_reader", "1", "segmentation", "walks from its datasets to the reader")

    def __init__(self) -> None:
        super().__init__()
        self.extra: list[dict[str, Any]] = []

    def pretrain(self, unlabeled: Any, ctx: RunContext) -> None:
        for ds in find_datasets(unlabeled):
            try:
                items = [ds[i] for i in range(len(ds))]
            except Exception:  # noqa: BLE001
                continue
            self.extra += [it for it in items if isinstance(it, dict) and "label" in it]

    def finetune(self, labeled: Any, modality: str, ctx: RunContext) -> None:
        samples = [labeled[i] for i in range(len(labeled))]
        for ds in find_datasets(labeled):
            try:
                samples += [ds[i] for i in range(len(ds))]
            except Exception:  # noqa: BLE001
                continue
        samples += self.extra
        info = ctx.task_info
        self._fit([s for s in samples if isinstance(s, dict) and "label" in s], modality, int(info["num_classes"]), int(info["ignore_index"]))


class GcLabels(HonestCentroid):
    """Searches the interpreter's heap for the harness's test batch and returns its labels: outside
    what an in-process harness can prevent (see docs/threat_model.md); check-entry's probe catches it."""

    metadata: ClassVar[EntryMetadata] = EntryMetadata("cheat_gc", "1", "segmentation", "finds labels through gc")

    def predict(self, batch: dict[str, Any], modality: str) -> torch.Tensor:
        b, _, _, h, w = batch[modality].shape
        for obj in gc.get_objects():
            if isinstance(obj, dict) and obj is not batch and "label" in obj and isinstance(obj.get("label"), torch.Tensor) \
                    and obj["label"].shape == (b, h, w) and obj.get("id") == batch.get("id"):
                lab = obj["label"].clamp(0, self.k - 1)
                return torch.nn.functional.one_hot(lab, self.k).permute(0, 3, 1, 2).float() * 100
        return super().predict(batch, modality)


class ZeroTargetStd(InputMeanEntry):
    """Zeroes the target's normalisation std (the harness once de-normalised with the entry's copy)."""

    metadata: ClassVar[EntryMetadata] = EntryMetadata("cheat_zero_std", "1", "reconstruction", "zeroes target_std in place")

    def sample(self, batch: dict[str, Any], n: int, generator: torch.Generator) -> torch.Tensor:
        out = super().sample(batch, n, generator)
        for key in ("target_std", "target_mean"):
            if key in batch:
                batch[key].zero_()
        for src in batch["sources"].values():
            src["values"].fill_(0.0)
        return out


class ReadHiddenTarget(InputMeanEntry):
    """Returns the target source's values if they are visible in the batch, else the honest mean."""

    metadata: ClassVar[EntryMetadata] = EntryMetadata("cheat_hidden_target", "1", "reconstruction", "returns the hidden target if visible")

    def sample(self, batch: dict[str, Any], n: int, generator: torch.Generator) -> torch.Tensor:
        honest = super().sample(batch, n, generator)
        truth = torch.stack([batch["sources"][t]["values"][i] for i, t in enumerate(batch["target"])])
        seen = torch.isfinite(truth)
        return torch.where(seen, truth.expand_as(honest), honest)


class WalkToStore(InputMeanEntry):
    """Looks behind its training dataset for other splits (a store, a reader, item lists)."""

    metadata: ClassVar[EntryMetadata] = EntryMetadata("cheat_walk_store", "1", "reconstruction", "walks from train to other splits")

    def fit(self, train: Any, val: Any, ctx: RunContext) -> None:
        self.found = [type(ds).__name__ for ds in find_datasets(train) + find_datasets(val)]
        if self.found:
            raise RuntimeError(f"reached {self.found} from the training view")
        super().fit(train, val, ctx)


class GcTargets(InputMeanEntry):
    """Searches the heap for the harness's batch and returns the hidden target values (out of
    scope for in-process prevention; the hidden-truth probe of every job catches it)."""

    metadata: ClassVar[EntryMetadata] = EntryMetadata("cheat_gc_targets", "1", "reconstruction", "finds hidden targets through gc")

    def sample(self, batch: dict[str, Any], n: int, generator: torch.Generator) -> torch.Tensor:
        honest = super().sample(batch, n, generator)
        for obj in gc.get_objects():
            if isinstance(obj, dict) and obj is not batch and "sources" in obj and obj.get("id") == batch.get("id") and "target" in obj:
                truth = torch.stack([obj["sources"][t]["values"][i] for i, t in enumerate(obj["target"])])
                if torch.isfinite(truth).any():
                    return torch.where(torch.isfinite(truth), truth.expand_as(honest), honest)
        return honest


class _Diagonal(torch.Tensor):
    """A tensor whose ``__torch_function__`` rewrites the harness's confusion-matrix index
    ``t * k + p`` into ``t * k + t`` (every pixel on the diagonal)."""

    k = 0

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN206
        kwargs = kwargs or {}
        if getattr(func, "__name__", "") in ("add", "__add__") and len(args) == 2 and type(args[0]) is torch.Tensor \
                and isinstance(args[1], _Diagonal) and not args[0].is_floating_point() and cls.k:
            with torch._C.DisableTorchFunctionSubclass():
                return args[0] + torch.div(args[0], cls.k, rounding_mode="floor")
        return super().__torch_function__(func, types, args, kwargs)


class TensorSubclassSpy(HonestCentroid):
    """Returns its honest logits as a tensor subclass that would rewrite the harness's scoring."""

    metadata: ClassVar[EntryMetadata] = EntryMetadata("cheat_tensor_subclass", "1", "segmentation", "returns a __torch_function__ subclass")

    def finetune(self, labeled: Any, modality: str, ctx: RunContext) -> None:
        super().finetune(labeled, modality, ctx)
        _Diagonal.k = int(ctx.task_info["num_classes"])

    def predict(self, batch: dict[str, Any], modality: str) -> torch.Tensor:
        return super().predict(batch, modality).as_subclass(_Diagonal)


class ForgeResult(HonestCentroid):
    """Writes a forged result into every pipe it holds, then ends its process."""

    metadata: ClassVar[EntryMetadata] = EntryMetadata("cheat_forge", "1", "segmentation", "forges the job's result on the pipe")

    def pretrain(self, unlabeled: Any, ctx: RunContext) -> None:
        import os
        import pickle
        import struct

        from benchmark.wire import pack

        for fd in range(3, 64):
            for blob in (pack("result", {"stats": {}, "parameters": 1}), pack("ready", {}), pickle.dumps(("ok", 1.0))):
                try:
                    os.write(fd, struct.pack("!i", len(blob)) + blob)
                except OSError:
                    pass
        os._exit(0)


class FitLogObjects(HonestCentroid):
    """Puts objects that are not numbers into its training log (a set; an object with __reduce__)."""

    metadata: ClassVar[EntryMetadata] = EntryMetadata("cheat_fit_log", "1", "segmentation", "odd objects in ctx.fit_log")

    def finetune(self, labeled: Any, modality: str, ctx: RunContext) -> None:
        super().finetune(labeled, modality, ctx)
        ctx.fit_log["x"] = {"steps": 3, "resumed_from": 0, "samples": 12, "seconds": 0.5, "note": {1, 2}}

"""Tiny in-memory tasks of each family, in the batch formats of ``docs/batch_formats.md``.

``check-entry`` runs an entry through a whole job on these in seconds (like a mock run), and the
harness tests use them. They are learnable (the label or target is a noisy function of the
inputs), so "does it learn at all" is checkable, but they stand for no real dataset.

Their batches carry the keys of the real tasks' batches, with the same dtypes and ranks
(``tests/test_mock_keys.py`` compares them with real smoke batches): an entry that runs here finds
what it reads on the real tasks. Segmentation batches hold the keys every SITS task has
(``coords`` is PASTIS-R's only, so it is left out: an entry must treat it as optional).
Reconstruction windows carry ``t0``, ``window_h`` and ``n_available``; test windows add the
target's de-normalisation constants (``target_mean`` / ``target_std``, which the harness keeps to
itself) and their batches ``target_size``, as tc_primed's do; some windows lack a source, so batches
hold absent sources (``avail`` False). Known differences: every source shares one 12 × 12 grid, and
training windows name a ``target`` (tc_primed's say ``None``: the entry chooses what to hide).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .collate import sits_collate, window_collate
from .contracts import BootstrapSpec, Cell, DataIdentity, MetricSpec, RunContext, TaskSpec
from .errors import BenchmarkError

MOCK_VERSION = "mock-1"
# batch keys some real segmentation tasks add and others lack (PASTIS-R's patch centroid): the mock
# leaves them out, so an entry that needs one fails check-entry instead of a real task
OPTIONAL_SEGMENTATION_KEYS: tuple[str, ...] = ("coords",)


def _identity(seed: int) -> DataIdentity:
    return DataIdentity(kind="synthetic", root="<in-memory mock>", generator_version=MOCK_VERSION, seed=seed)


# --------------------------------------------------------------------------- segmentation
class _Splits(dict):
    """Splits made on first use: a job's process, which never asks for the test split, never
    holds its truth (as with the real tasks, whose readers load a split when asked)."""

    def __init__(self, make: dict[str, Any]):
        super().__init__()
        self._make = make

    def __missing__(self, split: str) -> list[dict[str, Any]]:
        self[split] = self._make[split]()
        return self[split]


class _ListDataset(torch.utils.data.Dataset):
    def __init__(self, items: list[dict[str, Any]]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.items[i]


class MockSegmentationTask:
    """4 classes (0 = background) + ignore index 4; radar 3×6 dates, optical 3×5 dates, 16×16 px."""

    num_classes = 4
    ignore_index = 4
    channels = {"radar": 3, "optical": 3}

    def __init__(self, n_train: int = 12, n_test: int = 6, size: int = 16, seed: int = 0):
        self.n_train, self.n_test, self.size, self.seed = n_train, n_test, size, seed
        cells = tuple(
            Cell(f"{m}-{f}", {"modality": m, "label_fraction": f / 100}, shared={"pretrain": "unlabeled"})
            for m in ("radar", "optical") for f in (100, 50)
        )
        self.spec = TaskSpec(
            name="mock_segmentation", version="1", family="segmentation", description="in-memory mock SITS segmentation",
            cells=cells,
            metric=MetricSpec(name="miou", num_classes=self.num_classes, ignore_index=self.ignore_index,
                              class_names=("background", "a", "b", "c")),
            bootstrap=BootstrapSpec(unit="patch", resamples=200, seed=0),
        )

    def _make(self, n: int, offset: int) -> list[dict[str, Any]]:
        class_gen = torch.Generator().manual_seed(self.seed)  # class signatures are shared by every split
        profiles = {m: torch.randn(self.num_classes, t, c, generator=class_gen) for m, (t, c) in {"radar": (6, 3), "optical": (5, 3)}.items()}
        g = torch.Generator().manual_seed(self.seed * 1000 + offset)
        s = self.size
        items = []
        for i in range(n):
            # blocky parcels: a 4×4 grid of random classes, upsampled
            label = torch.randint(0, self.num_classes, (4, 4), generator=g).repeat_interleave(s // 4, 0).repeat_interleave(s // 4, 1)
            item: dict[str, Any] = {"id": f"p{offset + i}"}
            for m, prof in profiles.items():
                x = prof[label].permute(2, 3, 0, 1)  # [T, C, H, W]
                item[m] = x + 0.8 * torch.randn(x.shape, generator=g)
                item[f"{m}_dates"] = torch.sort(torch.randperm(300, generator=g)[: x.shape[0]].float()).values
            lab = label.clone()
            lab[0, :] = self.ignore_index  # a void border, as in real label maps
            item["label"] = lab
            items.append(item)
        return items

    def resolve_data(self, data_root: Path | None, profile: str) -> tuple[dict[str, list], DataIdentity]:
        data = _Splits({"train": lambda: self._make(self.n_train, 0), "test": lambda: self._make(self.n_test, 10_000),
                        "val": lambda: self._make(2, 20_000)})
        return data, _identity(self.seed)

    def info(self, data: Any, cell: Cell) -> dict[str, Any]:
        # non-uniform class weights, so check-entry exercises entries that read them
        weights = [round(0.5 + k / max(1, self.num_classes - 1), 3) for k in range(self.num_classes)]
        return {"num_classes": self.num_classes, "ignore_index": self.ignore_index, "class_names": ["background", "a", "b", "c"],
                "channels": dict(self.channels), "dataset": "mock_segmentation", "class_weights": weights}

    def unlabeled(self, data: dict, cell: Cell, ctx: RunContext) -> torch.utils.data.Dataset:
        return _ListDataset([{k: v for k, v in it.items() if k != "label"} for it in data["train"]])

    def labeled(self, data: dict, split: str, cell: Cell, ctx: RunContext) -> torch.utils.data.Dataset:
        items = data[split]
        if split == "train":
            items = items[: max(1, round(len(items) * cell.params["label_fraction"]))]
        return _ListDataset(items)

    collate = staticmethod(sits_collate)

    def perturb_hidden(self, data: dict, seed: int) -> None:
        """Replace every test label by another class (check-entry's probe: an honest entry's
        predictions cannot depend on what it never sees)."""
        g = torch.Generator().manual_seed(seed)
        for item in data["test"]:
            lab = item["label"]
            shift = torch.randint(1, self.num_classes, lab.shape, generator=g)
            item["label"] = torch.where(lab == self.ignore_index, lab, (lab + shift) % self.num_classes)


# --------------------------------------------------------------------------- reconstruction
T0_EPOCH_S = 1_500_000_000.0  # the mock windows' reference times: seconds since 1970 (UTC), one hour apart


def mock_window_collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """``window_collate`` plus what tc_primed's collate adds: ``t0`` float64, ``window_h`` float32
    and ``n_available`` int64 as ``[B]`` tensors and, for evaluation windows (those with the
    target's constants), ``target_size`` = (H, W) of ``task.target(batch)``, int64 ``[2]``."""
    batch = window_collate(items)
    for key, dtype in (("t0", torch.float64), ("window_h", torch.float32), ("n_available", torch.int64)):
        if key in batch:
            batch[key] = torch.tensor(batch[key], dtype=dtype)
    targets = {t for t in batch["target"] if t is not None}
    if "target_mean" in batch and targets:
        values = [batch["sources"][t]["values"] for t in targets]
        batch["target_size"] = torch.tensor([max(v.shape[-2] for v in values), max(v.shape[-1] for v in values)])
    return batch


class MockReconstructionTask:
    """Three sources seeing one smooth field with different gains; the target is one of them.

    Values are normalized (zero mean, unit scale); test windows carry the target's constants
    ``target_mean`` = 250 and ``target_std`` = 20 per channel, with which ``denormalize`` maps
    them to Kelvin-like units, as tc_primed does with each source's training statistics. Target
    pixels on a NaN border are unobserved and not scored. Every fourth window lacks its last
    non-target source (absent in the batch: NaN, ``avail`` False).
    """

    sources = ("s0", "s1", "s2")
    channels = 2
    target_mean, target_std = 250.0, 20.0

    def __init__(self, n_train: int = 24, n_test: int = 8, size: int = 12, seed: int = 0, members: int = 4):
        self.n_train, self.n_test, self.size, self.seed = n_train, n_test, size, seed
        cells = (
            Cell("win1h-all", {"window_h": 1, "max_sources": None}, shared={"fit": "train1h"}),
            Cell("win1h-max2", {"window_h": 1, "max_sources": 2}, shared={"fit": "train1h"}),
        )
        self.spec = TaskSpec(
            name="mock_reconstruction", version="1", family="reconstruction", description="in-memory mock multi-source reconstruction",
            cells=cells,
            metric=MetricSpec(name="crps", crps_estimator="standard", ensemble_size=members, units="K", higher_is_better=False),
            bootstrap=BootstrapSpec(unit="storm", resamples=200, seed=0, cluster="storm", row_unit="sample-channel"),
        )

    def _make(self, n: int, offset: int, evaluation: bool = False) -> list[dict[str, Any]]:
        g = torch.Generator().manual_seed(self.seed * 1000 + offset)
        s, c = self.size, self.channels
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, s), torch.linspace(-1, 1, s), indexing="ij")
        items = []
        for i in range(n):
            cx, cy, amp = (torch.rand(3, generator=g) - 0.5).tolist()
            field = amp * 3 * torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) * 4)
            srcs = {}
            for j, key in enumerate(self.sources):
                vals = torch.stack([field * (1 + 0.3 * j + 0.2 * ch) for ch in range(c)]) + 0.1 * torch.randn(c, s, s, generator=g)
                vals[:, :, -1] = float("nan")  # an unobserved swath edge
                srcs[key] = {
                    "values": vals, "coords": torch.stack([yy * 5 + 15, xx * 5 - 60]), "dt": torch.tensor(float(j) * 0.3),
                    "landmask": torch.zeros(s, s), "characs": torch.tensor([0.37 + 0.1 * j, 0.89, 10.0 + j]), "avail": torch.tensor(True),
                }
            target = self.sources[int(torch.randint(0, len(self.sources), (1,), generator=g))]
            if (offset + i) % 4 == 3:  # a window without one source (never the target, never the first input)
                del srcs[[k for k in self.sources if k != target][-1]]
            item: dict[str, Any] = {"sources": srcs, "target": target, "id": f"w{offset + i}", "storm": f"storm{(offset + i) // 3}",
                                    "t0": T0_EPOCH_S + 3600.0 * (offset + i), "window_h": 1.0, "n_available": len(srcs)}
            if evaluation:
                item["target_mean"] = torch.full((c,), self.target_mean)
                item["target_std"] = torch.full((c,), self.target_std)
            items.append(item)
        return items

    def resolve_data(self, data_root: Path | None, profile: str) -> tuple[dict[str, list], DataIdentity]:
        return _Splits({"train": lambda: self._make(self.n_train, 0), "val": lambda: self._make(4, 5000),
                        "test": lambda: self._make(self.n_test, 10_000, evaluation=True)}), _identity(self.seed)

    def info(self, data: Any, cell: Cell) -> dict[str, Any]:
        return {"sources": list(self.sources), "channels": self.channels, "channel_names": [f"c{k}" for k in range(self.channels)],
                "characs_dim": 3, "characs_names": ["gain", "band", "footprint"], "max_train_sources": len(self.sources),
                "dt_units": "hours before t0", **dict(cell.params), "data_kind": "synthetic"}

    def windows(self, data: dict, split: str, cell: Cell, ctx: RunContext) -> torch.utils.data.Dataset:
        items = data[split]
        if cell.params.get("max_sources"):
            keep = cell.params["max_sources"]
            items = [{**it, "sources": {k: v for k, v in it["sources"].items() if k == it["target"] or k in self.sources[: keep - 1 + (it["target"] in self.sources[: keep - 1])]}} for it in items]
        return _ListDataset(items)

    collate = staticmethod(mock_window_collate)

    def target(self, batch: dict[str, Any]) -> torch.Tensor:
        """[B, C, H, W] normalized target values on the ``target_size`` grid (NaN where not observed)."""
        values = [batch["sources"][t]["values"][i] for i, t in enumerate(batch["target"])]
        h, w = (int(x) for x in batch["target_size"]) if "target_size" in batch else values[0].shape[-2:]
        out = torch.full((len(values), values[0].shape[0], h, w), float("nan"))
        for i, v in enumerate(values):
            out[i, :, : v.shape[-2], : v.shape[-1]] = v
        return out

    def inputs(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The batch an entry sees: target values hidden (NaN), everything else kept."""
        sources = {k: dict(v) for k, v in batch["sources"].items()}
        for i, t in enumerate(batch["target"]):
            values = sources[t]["values"].clone()
            values[i] = float("nan")
            sources[t]["values"] = values
        return {**batch, "sources": sources}

    def denormalize(self, x: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        """Normalized ``[..., B, C, H, W]`` -> Kelvin-like units with the batch's target constants."""
        if "target_mean" not in batch:
            raise BenchmarkError("denormalize needs an evaluation batch (with target_mean/target_std)")
        return x * batch["target_std"].to(x.dtype)[..., None, None] + batch["target_mean"].to(x.dtype)[..., None, None]

    def units(self, batch: dict[str, Any]) -> list[str]:
        return list(batch["storm"])

    def perturb_hidden(self, data: dict, seed: int) -> None:
        """Replace the hidden target values of every test window by noise (check-entry's probe)."""
        g = torch.Generator().manual_seed(seed)
        for item in data["test"]:
            values = item["sources"][item["target"]]["values"]
            item["sources"][item["target"]] = {**item["sources"][item["target"]],
                                               "values": torch.where(torch.isfinite(values), 3 * torch.randn(values.shape, generator=g), values)}

    def sample_ids(self, batch: dict[str, Any]) -> list[str]:
        return list(batch["id"])

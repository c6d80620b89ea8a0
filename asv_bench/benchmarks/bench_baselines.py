"""The S4 paper's baselines at the smoke widths: one pre-training step, one fine-tuning step,
inference, and the parameter count.

Batches come from the mock SITS task (4 patches, 16 × 16 px, 5–6 dates), so the numbers track the
code's cost, not the data's.
"""

from __future__ import annotations

ENTRIES = {
    "satmae": "baselines.satmae:SatMAE",
    "seco": "baselines.seco:SeCo",
    "gssl": "baselines.gssl:GSSL",
    "caco": "baselines.caco:CaCo",
    "mmf": "baselines.mmf:MMF",
}


def _setup(name: str):
    from pathlib import Path

    import torch

    from benchmark.collate import sits_collate
    from benchmark.contracts import RunContext
    from benchmark.mock import MockSegmentationTask
    from benchmark.registry import load_entry

    torch.manual_seed(0)
    torch.set_num_threads(1)
    cls = load_entry(ENTRIES[name])
    hp = dict(cls.profiles["smoke"])
    task = MockSegmentationTask()
    data, _ = task.resolve_data(None, "smoke")
    cell = task.spec.cells[0]
    unlabeled = task.unlabeled(data, cell, None)
    ctx = RunContext(device=torch.device("cpu"), seed=0, profile="smoke", hparams=hp, checkpoint_dir=Path("."),
                     task_info=task.info(data, cell), collate=task.collate, show_progress=False)
    entry = cls()
    entry.channels = dict(task.channels)
    entry.net = entry.build_network(hp)
    pre = entry.build_pretrainer(unlabeled, ctx)
    seg = entry.build_segmenter(task.num_classes, "radar", hp)
    batch = sits_collate(data["train"][:4])
    return batch, pre, seg, task.ignore_index


class BaselineStep:
    params = list(ENTRIES)
    param_names = ["entry"]
    timeout = 120

    def setup(self, name: str) -> None:
        import torch

        self.batch, self.pre, self.seg, self.ignore = _setup(name)
        params = {id(p): p for m in (self.pre, self.seg) for p in m.parameters() if p.requires_grad}
        self.opt = torch.optim.AdamW(params.values(), lr=1e-3)

    def time_pretrain_step(self, name: str) -> None:
        loss, _ = self.pre(self.batch)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()

    def time_finetune_step(self, name: str) -> None:
        from torch.nn import functional as F

        b = self.batch
        logits = self.seg(b["radar"], b["radar_mask"], b["radar_dates"], "radar")
        loss = F.cross_entropy(logits, b["label"], ignore_index=self.ignore)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()

    def time_predict(self, name: str) -> None:
        import torch

        b = self.batch
        self.seg.eval()
        with torch.inference_mode():
            self.seg(b["radar"], b["radar_mask"], b["radar_dates"], "radar")
        self.seg.train()

    def track_parameters(self, name: str) -> int:
        return sum(p.numel() for p in self.seg.parameters())

    track_parameters.unit = "parameters"

"""S4 family at the smoke widths: one training step (pre-training and fine-tuning) and inference.

Batches come from the mock SITS task (4 patches, 16 × 16 px, 5–6 dates), so the numbers track the
code's cost, not the data's.
"""

from __future__ import annotations

VARIANTS = ["s4", "s4_contrastive", "s4_reconstruction", "s4_single_modal", "unet3d_scratch"]


def _setup(name: str):
    import torch

    from benchmark.collate import sits_collate
    from benchmark.mock import MockSegmentationTask
    from benchmark.registry import load_entry
    from reference_models.s4.entry import S4Pretrainer
    from reference_models.s4.unet3d import Segmenter, UNet3D

    torch.manual_seed(0)
    torch.set_num_threads(1)
    cls = load_entry(name)
    hp = dict(cls.profiles["smoke"])
    task = MockSegmentationTask()
    data, _ = task.resolve_data(None, "smoke")
    batch = sits_collate(data["train"][:4])
    channels = dict(task.channels)
    backbone = UNet3D(channels, hp["base"])
    w_r = hp["lambda_rec"] if cls.w_reconstruction is None else cls.w_reconstruction
    pre = S4Pretrainer(backbone, channels, hp, cls.w_contrastive, w_r, cls.single_modal)
    seg = Segmenter(backbone, task.num_classes)
    return batch, pre, seg, cls.pretrains


class S4Step:
    params = VARIANTS
    param_names = ["entry"]
    timeout = 120

    def setup(self, name: str) -> None:
        import torch

        self.batch, self.pre, self.seg, self.pretrains = _setup(name)
        self.opt = torch.optim.AdamW({id(p): p for m in (self.pre, self.seg) for p in m.parameters()}.values(), lr=1e-3)

    def time_pretrain_step(self, name: str) -> None:
        if not self.pretrains:
            return
        loss, _ = self.pre(self.batch)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()

    def time_finetune_step(self, name: str) -> None:
        from torch.nn import functional as F

        logits = self.seg(self.batch["radar"], self.batch["radar_mask"], "radar")
        loss = F.cross_entropy(logits, self.batch["label"], ignore_index=4)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()

    def time_predict(self, name: str) -> None:
        import torch

        self.seg.eval()
        with torch.inference_mode():
            self.seg(self.batch["optical"], self.batch["optical_mask"], "optical")
        self.seg.train()

    def track_parameters(self, name: str) -> int:
        return sum(p.numel() for p in self.seg.parameters())

    track_parameters.unit = "parameters"

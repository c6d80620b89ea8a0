"""MoTiF entries at the smoke widths: one training step and inference (sampling), per variant.

Batches come from the mock reconstruction task (4 windows of 3 sources, 12 × 12 px, 2 channels),
so the numbers track the code's cost, not the data's. ``time_sample`` draws 4 realizations with
the profile's Euler steps (flow matching) or one forward pass repeated (deterministic).
"""

from __future__ import annotations

VARIANTS = ["motif_fm", "motif_det"]


def _setup(name: str):
    import torch

    from benchmark.mock import MockReconstructionTask
    from reference_models.motif_fm import PROFILES, MotifDet, MotifFM

    torch.manual_seed(0)
    torch.set_num_threads(1)
    task = MockReconstructionTask(n_train=4, n_test=4)
    data, _ = task.resolve_data(None, "smoke")
    train_batch = task.collate(data["train"][:4])
    test_batch = task.collate(data["test"][:4])
    entry = {"motif_fm": MotifFM, "motif_det": MotifDet}[name]()
    model = entry.build({"channels": task.channels, "characs_dim": 3}, dict(PROFILES["smoke"]))
    return task, entry, model, train_batch, test_batch


class MotifStep:
    params = VARIANTS
    param_names = ["entry"]
    timeout = 120

    def setup(self, name: str) -> None:
        import torch

        self.task, self.entry, self.model, self.train_batch, self.test_batch = _setup(name)
        self.inputs = self.task.inputs(self.test_batch)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-3)

    def time_train_step(self, name: str) -> None:
        self.model.train()
        loss, _ = self.model(self.train_batch)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()

    def time_sample(self, name: str) -> None:
        import torch

        with torch.inference_mode():
            self.entry.sample(self.inputs, 4, torch.Generator().manual_seed(0))

    def track_parameters(self, name: str) -> int:
        return self.entry.parameter_count()

    track_parameters.unit = "parameters"

    def track_train_samples_per_second(self, name: str) -> float:
        import time

        self.time_train_step(name)  # warm-up
        start, n = time.perf_counter(), 0
        for _ in range(5):
            self.time_train_step(name)
            n += len(self.train_batch["target"])
        return n / (time.perf_counter() - start)

    track_train_samples_per_second.unit = "samples/s"

    def track_sample_realizations_per_second(self, name: str) -> float:
        import time

        self.time_sample(name)  # warm-up
        start = time.perf_counter()
        self.time_sample(name)
        return 4 * len(self.test_batch["target"]) / (time.perf_counter() - start)

    track_sample_realizations_per_second.unit = "realizations/s"

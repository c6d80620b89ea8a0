"""Segmentation entries that end their job in every way a job can end badly."""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any, ClassVar

from benchmark.contracts import EntryMetadata, RunContext
from tests.plugins.cheat_entries import HonestCentroid


class ExitsEntry(HonestCentroid):
    metadata: ClassVar[EntryMetadata] = EntryMetadata("exits", "1", "segmentation", "calls sys.exit(0) in finetune")

    def finetune(self, labeled: Any, modality: str, ctx: RunContext) -> None:
        sys.exit(0)


class InterruptsEntry(HonestCentroid):
    metadata: ClassVar[EntryMetadata] = EntryMetadata("interrupts", "1", "segmentation", "raises KeyboardInterrupt in finetune")

    def finetune(self, labeled: Any, modality: str, ctx: RunContext) -> None:
        raise KeyboardInterrupt


class HangsEntry(HonestCentroid):
    metadata: ClassVar[EntryMetadata] = EntryMetadata("hangs", "1", "segmentation", "never returns from predict")

    def predict(self, batch: dict[str, Any], modality: str) -> Any:
        while True:
            time.sleep(1)


class CrashesEntry(HonestCentroid):
    metadata: ClassVar[EntryMetadata] = EntryMetadata("crashes", "1", "segmentation", "kills its own process (as a segfault would)")

    def finetune(self, labeled: Any, modality: str, ctx: RunContext) -> None:
        os.kill(os.getpid(), signal.SIGSEGV)


class HardExitEntry(HonestCentroid):
    metadata: ClassVar[EntryMetadata] = EntryMetadata("hard_exit", "1", "segmentation", "os._exit(0) in pretrain")

    def pretrain(self, unlabeled: Any, ctx: RunContext) -> None:
        os._exit(0)


class FlakyEntry(HonestCentroid):
    """Honest, except that it fails while ``$FLAKY_FAIL`` is set (a re-run that goes wrong)."""

    metadata: ClassVar[EntryMetadata] = EntryMetadata("flaky", "1", "segmentation", "fails when FLAKY_FAIL is set")

    def finetune(self, labeled: Any, modality: str, ctx: RunContext) -> None:
        if os.environ.get("FLAKY_FAIL"):
            raise RuntimeError("flaky failure")
        super().finetune(labeled, modality, ctx)


class ClaimsFloor(HonestCentroid):
    """A file/module entry claiming the registered floor's name."""

    metadata: ClassVar[EntryMetadata] = EntryMetadata("unet3d_scratch", "1", "segmentation", "not the real floor")


class EscapesEntry(HonestCentroid):
    """Ignores SIGTERM, leaves a grandchild in its own session (writing to the harness's output)
    and hangs: the timeout must end both, and the run must not wait for the grandchild."""

    metadata: ClassVar[EntryMetadata] = EntryMetadata("escapes", "1", "segmentation", "setsid grandchild + hang")

    def pretrain(self, unlabeled: Any, ctx: RunContext) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if os.fork() == 0:
            os.setsid()
            for _ in range(120):
                print("grandchild still here", flush=True)
                time.sleep(1)
            os._exit(0)
        while True:
            time.sleep(1)


class TampersEntry(HonestCentroid):
    """Rewrites every other record and statistics file it can find from its checkpoint folder."""

    metadata: ClassVar[EntryMetadata] = EntryMetadata("tampers", "1", "segmentation", "edits other entries' records")

    def pretrain(self, unlabeled: Any, ctx: RunContext) -> None:
        profile_dir = ctx.checkpoint_dir.parents[4]
        for path in profile_dir.glob("*/*.npz"):
            path.write_bytes(b"x")
        for path in profile_dir.glob("*/*.json"):
            path.unlink()
        (profile_dir / "honest_centroid" / "optical-100-seed0.json").write_text("{}")

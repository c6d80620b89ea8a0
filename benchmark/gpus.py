"""GPUs ``benchmark estimate`` can size a run for: memory and peak dense bf16 throughput.

Peak figures are the vendors' dense (no sparsity) bf16 tensor-core numbers; a real training step
reaches a fraction of them, which ``estimate`` states as its utilisation (default 40 %).
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import BenchmarkError


@dataclass(frozen=True)
class GPU:
    name: str
    memory_gb: float  # GiB usable by tensors before the reserve ``estimate`` keeps
    peak_bf16_tflops: float  # dense

    @property
    def memory_bytes(self) -> int:
        return int(self.memory_gb * 2**30)


GPUS: dict[str, GPU] = {
    "H100": GPU("H100 SXM 80 GB", 80.0, 989.0),
    "A100": GPU("A100 SXM 80 GB", 80.0, 312.0),
    "L40S": GPU("L40S 48 GB", 48.0, 362.0),
}
DEFAULT_GPU = "H100"


def gpu_by_name(name: str | None, memory_gb: float | None = None) -> GPU:
    """The named GPU (default H100), its memory replaced by ``memory_gb`` when given."""
    key = (name or DEFAULT_GPU).upper().replace("-", "").replace(" ", "")
    matches = [g for k, g in GPUS.items() if key.startswith(k)]
    if not matches:
        raise BenchmarkError(f"unknown GPU {name!r}; known: {', '.join(GPUS)} (or give --memory-gb)")
    gpu = matches[0]
    if memory_gb is not None:
        if memory_gb <= 0:
            raise BenchmarkError(f"--memory-gb must be positive, got {memory_gb}")
        gpu = GPU(f"{gpu.name if name else 'GPU'} with {memory_gb:g} GB", float(memory_gb), gpu.peak_bf16_tflops)
    return gpu

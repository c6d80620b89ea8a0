"""A picture of one embedded SITS patch: optical RGB and radar over the season, with its labels.

``python -m tasks.sits.plot --task pastis_r --out docs/img/pastis_r_patch.png`` draws the
first test patch (South Sudan: the most surveyed test tile) of the embedded dataset (generated on first use) as the readers return it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np


def _stretch(x: np.ndarray, low: float = 2, high: float = 98) -> np.ndarray:
    lo, hi = np.percentile(x, [low, high])
    return np.clip((x - lo) / (hi - lo + 1e-9), 0, 1)


def plot_sample(raw_optical: np.ndarray, optical_days: np.ndarray, radar: np.ndarray, radar_days: np.ndarray,
                label: np.ndarray, out: Path, title: str, n_dates: int = 6, extra: dict[str, np.ndarray] | None = None) -> Path:
    """Rows: optical RGB (reflectance), radar VV / VH / VV−VH composite (dB) at ``n_dates`` dates
    spread over the season, then the label (and any ``extra`` maps, e.g. instances)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    maps = {"label": label, **(extra or {})}
    cols = max(n_dates, len(maps))
    fig, axes = plt.subplots(3, cols, figsize=(1.8 * cols, 5.8))
    for row, (series, days, kind) in enumerate(((raw_optical, optical_days, "optical"), (radar, radar_days, "radar"))):
        pick = np.unique(np.linspace(0, len(days) - 1, n_dates).round().astype(int))
        for c, k in enumerate(pick):
            img = series[k].transpose(1, 2, 0)
            shown = np.stack([_stretch(img[..., i]) for i in range(3)], -1) if kind == "radar" else np.clip(img / 0.3, 0, 1)
            axes[row, c].imshow(shown, interpolation="nearest")
            axes[row, c].set_title(f"{kind} day {int(days[k])}", fontsize=7)
    for c, (name, m) in enumerate(maps.items()):
        axes[2, c].imshow(m, cmap="tab20", interpolation="nearest", vmin=0, vmax=19)
        axes[2, c].set_title(name, fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _pastis(root: Path, out: Path) -> Path:
    from tasks.pastis_r.dataset import PastisRDataset

    reader = PastisRDataset(root, (5,), normalize=False)
    pid = reader.ids[0]
    s: dict[str, Any] = reader[0]
    optical = s["optical"].numpy() / 10_000  # the reader's RGB (B4, B3, B2), reflectance
    inst = np.load(root / "INSTANCE_ANNOTATIONS" / f"INSTANCES_{pid}.npy")
    return plot_sample(optical, s["optical_dates"].numpy(), s["radar"].numpy(), s["radar_dates"].numpy(), s["label"].numpy(), out,
                       f"embedded PASTIS-R, test patch {pid}: S2 RGB (top), S1A VV/VH/VV-VH (middle), semantic label and parcel instances",
                       extra={"instances": inst % 20})


def _sudan(root: Path, out: Path) -> Path:
    from tasks.africa_crop_type.dataset import SouthSudanDataset

    reader = SouthSudanDataset(root, ["test"], normalize=False)
    best = max(range(len(reader)), key=lambda i: int((reader[i]["label"] != 4).sum()))  # the most surveyed tile
    s = reader[best]
    label = np.where(s["label"].numpy() == 4, 0, s["label"].numpy() + 1)
    return plot_sample(s["optical"].numpy() / 10_000, s["optical_dates"].numpy(), s["radar"].numpy()[:, :2].repeat(2, 1)[:, :3],
                       s["radar_dates"].numpy(), label, out,
                       f"embedded South Sudan, test tile {reader.ids[best]}: S2 RGB (top), S1 VV/VH (middle), label (0 = unlabelled)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", choices=("pastis_r", "africa_crop_type"), required=True)
    p.add_argument("--data-root", type=Path, default=None)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    from benchmark.registry import load_task

    task = load_task(args.task)
    data, _ = task.resolve_data(args.data_root, "mini")
    print((_pastis if args.task == "pastis_r" else _sudan)(Path(data.root), args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

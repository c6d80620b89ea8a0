"""S4 (Shenoy et al. 2024): multi-modal space-time contrastive + cross-modal reconstruction pre-training
of a 3D U-Net for crop-type segmentation from radar or optical series, with its ablations."""

from .entry import S4Contrastive, S4Entry, S4Reconstruction, S4SingleModal, UNet3DScratch

__all__ = ["S4Contrastive", "S4Entry", "S4Reconstruction", "S4SingleModal", "UNet3DScratch"]

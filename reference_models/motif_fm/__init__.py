"""MoTiF (Dauvilliers & Monteleoni) for cross-sensor reconstruction: the multi-source backbone in
swath geometry, flow matching (``motif_fm``) and the deterministic mask-token variant (``motif_det``)."""

from .entry import PROFILES, MotifDet, MotifFM

__all__ = ["PROFILES", "MotifDet", "MotifFM"]

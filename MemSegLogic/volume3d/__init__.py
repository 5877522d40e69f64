"""3D segmentation: one prompt propagated through a volume along one or three axes (both
directions each), the per-axis results fused into one mask."""

from .segment import SegmentationResult, segment_volume

__all__ = ["SegmentationResult", "segment_volume"]

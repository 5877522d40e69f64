"""3D segmentation: one prompt propagated through a volume along one or three axes (both
directions each), the per-axis results fused into one mask."""

from .segment import PropagationOptions, SegmentationResult, SpeedOptions, segment_volume

__all__ = ["PropagationOptions", "SegmentationResult", "SpeedOptions", "segment_volume"]

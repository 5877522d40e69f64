"""3D segmentation: one prompt propagated through a volume along one or three axes (both
directions each), the per-axis results fused into one mask."""

from .preview import PreviewMask, SliceUpdate
from .segment import PropagationOptions, SegmentationResult, SpeedOptions, segment_volume

__all__ = ["PreviewMask", "PropagationOptions", "SegmentationResult", "SliceUpdate", "SpeedOptions", "segment_volume"]

"""MemSeg's Qt-free logic: volumes, prompts, engines, propagation, checkpoints, CLI.

Only `MemSegLogic.mrml` imports Slicer; everything else runs in plain Python.

    from MemSegLogic import Volume, Prompt, segment_volume
    volume = Volume.read("chest.nrrd")
    prompt = Prompt.from_ras(volume, box=[(r0, a0, s), (r1, a1, s)])
    result = segment_volume(volume, prompt, model="medsam-lite")
    result.mask  # uint8, KJI, same grid as the volume
"""

from .volume3d.segment import DEFAULT_MODEL, SegmentationResult, segment_volume
from .runtime.checkpoints import Checkpoint, get_checkpoint, list_checkpoints, register_checkpoint
from .errors import (CheckpointError, DeviceError, InvalidPromptError, InvalidVolumeError, MemSegError,
                     SegmentationCancelled)
from .core.intensity import PRESET_NAMES, PRESETS, to_uint8
from .core.prompt import Prompt, SlicePrompt
from .core.volume import Volume

__version__ = "0.1.0"

__all__ = [
    "Checkpoint", "CheckpointError", "DEFAULT_MODEL", "DeviceError", "InvalidPromptError", "InvalidVolumeError",
    "MemSegError", "PRESETS", "PRESET_NAMES", "Prompt", "SegmentationCancelled", "SegmentationResult",
    "SlicePrompt", "Volume", "get_checkpoint", "list_checkpoints", "register_checkpoint", "segment_volume",
    "to_uint8",
]

"""MemSeg's Qt-free logic: one-prompt segmentation of 3D volumes and 2D+t cine loops.

Only the `MemSegLogic.mrml` package imports Slicer; everything else runs in plain Python.

    from MemSegLogic import Volume, Prompt, segment_volume
    volume = Volume.read("chest.nrrd")
    prompt = Prompt.from_ras(volume, box=[(r0, a0, s), (r1, a1, s)])
    result = segment_volume(volume, prompt, model="medsam-lite")
    result.mask  # uint8, KJI, same grid as the volume

The rooms: `core` (types, geometry, prompts), `io` (files), `volume3d` and `cine` (the two
segmentation paths), `engines` and `models` (the networks and how they propagate), `training`,
`runtime` (weights, devices, installer, worker thread), `mrml` (Slicer), `app` (CLI, demo).
"""

import importlib

from .cine import Cine, SequenceResult, segment_sequence
from .core.intensity import PRESET_NAMES, PRESETS, to_uint8
from .core.prompt import Prompt, SlicePrompt
from .core.volume import Volume
from .errors import (
    CheckpointError,
    DeviceError,
    InvalidPromptError,
    InvalidVolumeError,
    MemSegError,
    MemSegWarning,
    SegmentationCancelled,
)
from .runtime.checkpoints import DEFAULT_MODEL, Checkpoint, get_checkpoint, list_checkpoints, register_checkpoint
from .volume3d import PreviewMask, PropagationOptions, SegmentationResult, SliceUpdate, SpeedOptions, segment_volume

__version__ = "0.1.0"

__all__ = [
    "Checkpoint", "CheckpointError", "Cine", "DEFAULT_MODEL", "DeviceError", "InvalidPromptError",
    "InvalidVolumeError", "MemSegError", "MemSegWarning", "PRESETS", "PRESET_NAMES", "PreviewMask", "Prompt",
    "PropagationOptions", "SegmentationCancelled", "SegmentationResult", "SequenceResult", "SlicePrompt",
    "SliceUpdate", "SpeedOptions", "Volume",
    "get_checkpoint", "list_checkpoints", "register_checkpoint", "segment_sequence", "segment_volume", "to_uint8",
]


def __getattr__(name):
    # `from MemSegLogic import mrml_sequence`, the console name of the cine adapters, is the `mrml`
    # package (imported here, on use: it needs Slicer, MemSegLogic itself does not).
    if name == "mrml_sequence":
        return importlib.import_module(".mrml", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Cine loops (2D+t, e.g. echocardiography): the `Cine` type and `segment_sequence`, which
propagates one frame's prompt through every frame."""

from .cine import Cine, memsam_range, select_plane, to_gray
from .segment import SequenceResult, cine_models, frame_prompt, is_memsam, prompt_on_frame, segment_sequence

__all__ = ["Cine", "SequenceResult", "cine_models", "frame_prompt", "is_memsam", "memsam_range", "prompt_on_frame",
           "segment_sequence", "select_plane", "to_gray"]

"""`segment_volume`: one seed prompt in, a 3D mask and per-voxel probabilities out.

Plain Python over arrays or files; the Slicer adapters (`mrml`) and the CLI are thin layers on
top of this function.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
from typing import Optional, Sequence, Union

import numpy as np

from .checkpoints import get_checkpoint
from .errors import InvalidPromptError, InvalidVolumeError
from .geometry import AXIS_NAMES, slice_stack, unstack
from .intensity import DEFAULT_PRESET, to_uint8
from .progress import Monitor, ProgressCallback
from .prompt import Prompt
from .volume import Volume

DEFAULT_MODEL = "medsam2-pretrain"


@dataclasses.dataclass
class SegmentationResult:
    """``mask`` (uint8 0/1) and ``probability`` (float32 0..1), both KJI on the input's grid."""

    mask: np.ndarray
    probability: np.ndarray
    ijk_to_ras: np.ndarray
    model: str
    device: str
    axes: int
    slices_visited: int
    seconds: float
    segment_id: Optional[str] = None  # set when written into a Slicer segment

    def mask_volume(self) -> Volume:
        return Volume(self.mask, self.ijk_to_ras.copy())


def segment_volume(
    volume: Union[Volume, str, pathlib.Path],
    prompts: Union[Prompt, Sequence[Prompt]],
    model: str = DEFAULT_MODEL,
    axes: int = 1,
    device: str = "auto",
    preset: Optional[str] = None,
    threshold: float = 0.5,
    progress: Optional[ProgressCallback] = None,
    cancel=None,
) -> SegmentationResult:
    """Segment the object marked by ``prompts`` through the whole volume.

    volume: a `Volume` or a path to a file / DICOM folder; never modified.
    prompts: one `Prompt`, or several on different slices of the same axis (each becomes a
        conditioning slice; propagation runs forward from the first and backward from the last).
    model: a registered checkpoint name (see `MemSegLogic.checkpoints.list_checkpoints`).
    axes: 1 = propagate along the prompt's axis in both directions.
    device: "auto" (CUDA, then MPS, then CPU), "cuda", "mps" or "cpu".
    preset: intensity preset name (`MemSegLogic.intensity.PRESETS`), default percentile clipping.
    progress: called as ``progress(fraction, message)``; cancel: a `threading.Event` that stops
        the run promptly with `SegmentationCancelled`.
    """
    from .devices import is_out_of_memory, out_of_memory_error, resolve_device
    from .engines import load_engine

    started = time.perf_counter()
    monitor = Monitor(progress, cancel)
    if not isinstance(volume, Volume):
        volume = Volume.read(volume)
    volume.check_segmentable()
    seeds, axis = _seeds(volume, prompts)
    if axes != 1:
        raise ValueError(f"axes={axes!r} is not supported yet: use axes=1 (the prompt's axis, both directions)")
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must lie strictly between 0 and 1, got {threshold}")
    checkpoint = get_checkpoint(model)
    torch_device = resolve_device(device)

    monitor.report(0.0, f"loading {checkpoint.name}")
    engine = load_engine(checkpoint, torch_device, progress=monitor.sub(0.0, 0.05).report)
    image = to_uint8(volume.array, preset or DEFAULT_PRESET)  # a copy: the input stays as it was
    frames = slice_stack(image, axis)
    try:
        result = engine.propagate(frames, seeds, monitor.sub(0.05, 1.0))
    except RuntimeError as error:
        if is_out_of_memory(error):
            raise out_of_memory_error(torch_device) from error
        raise
    logits = unstack(result.logits, axis)
    probability = _sigmoid(logits)
    mask = (logits > np.log(threshold / (1.0 - threshold))).astype(np.uint8)
    monitor.report(1.0, f"done: {int(result.visited.sum())} {AXIS_NAMES[axis]} slices")
    return SegmentationResult(
        mask=np.ascontiguousarray(mask), probability=np.ascontiguousarray(probability),
        ijk_to_ras=volume.ijk_to_ras.copy(), model=checkpoint.name, device=str(torch_device), axes=axes,
        slices_visited=int(result.visited.sum()), seconds=time.perf_counter() - started)


def _seeds(volume: Volume, prompts) -> tuple:
    """Check the prompts and key them by slice index along their common axis."""
    prompts = [prompts] if isinstance(prompts, Prompt) else list(prompts or [])
    if not prompts:
        raise InvalidPromptError("empty prompt: give at least one positive point, a box or a mask")
    for prompt in prompts:
        if not isinstance(prompt, Prompt):
            raise InvalidPromptError(f"expected MemSegLogic.Prompt objects, got {type(prompt).__name__}")
        prompt.check(volume)
    axes = {prompt.axis for prompt in prompts}
    if len(axes) > 1:
        raise InvalidPromptError(
            f"prompts lie on slices of different axes ({', '.join(AXIS_NAMES[a] for a in sorted(axes))}): "
            "put all seeds on slices of one axis")
    seeds = {}
    for prompt in prompts:
        if prompt.slice_index in seeds:
            raise InvalidPromptError(
                f"two prompts on slice {AXIS_NAMES[prompt.axis]}={prompt.slice_index}: combine them into one Prompt")
        seeds[prompt.slice_index] = prompt.to_slice_prompt()
    return seeds, axes.pop()


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    # clipped so exp() cannot overflow float32 (unvisited slices hold -1024); sigmoid(+-80) is 1/0
    out = np.negative(np.clip(logits, -80.0, 80.0), dtype=np.float32)
    np.exp(out, out=out)
    out += 1.0
    return np.reciprocal(out, out=out)

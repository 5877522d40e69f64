"""`segment_sequence`: one prompt on one frame of a 2D+t cine in, a mask per frame out.

MemSAM (our own weights: none are published) is the model this path is for. A SAM 2 / MedSAM-2 or
LiteMedSAM checkpoint also runs here as **zero-shot video propagation**: the frames are treated
as the slices of a volume whose K axis is time and propagated both ways from the prompted frame
(`segment_volume` with one axis); those models were not trained on echo loops, and the result
says so (`SequenceResult.zero_shot`). The exception is a SAM 2 model trained on echo cine loops
(``medsam2-us-heart``, `Checkpoint.trained_on_cine`): the same propagation, not zero-shot.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from ..core.geometry import AXIS_NAMES
from ..core.metrics import check_threshold, sigmoid
from ..core.prompt import Prompt
from ..errors import CheckpointError, InvalidPromptError, InvalidVolumeError
from ..progress import Monitor, ProgressCallback
from ..runtime.checkpoints import MEMSAM_DEFAULT, VOLUME_ENGINES, Checkpoint, get_checkpoint, is_registered
from .cine import Cine, memsam_range

TIME_AXIS = 2  # a cine's frames are the K slices of `Cine.time_volume`
ZERO_SHOT_THRESHOLD = 0.5


@dataclasses.dataclass
class SequenceResult:
    """``masks`` (T, H, W) uint8 0/1 and ``probability`` (T, H, W) float32, frame t of the input
    at index t, on the input frames' grid; the cine's geometry and time index are kept."""

    masks: np.ndarray
    probability: np.ndarray
    ijk_to_ras: np.ndarray
    index_values: Tuple[str, ...]
    index_name: str
    index_unit: str
    model: str
    device: str
    prompt_frame: int
    threshold: float
    seconds: float
    zero_shot: bool  # True: a model not trained on cine loops, propagating frame to frame
    memory_frames: Optional[int] = None  # MemSAM's read-memory cap (None: every frame)
    weights_verified: bool = True  # False: MemSAM weights without a .sha256 record to check
    segment_id: Optional[str] = None  # set when recorded into a Slicer segmentation sequence

    def mask_cine(self) -> Cine:
        return Cine(self.masks, self.ijk_to_ras.copy(), self.index_values, self.index_name, self.index_unit)


def as_cine(frames: Union[Cine, np.ndarray, str, pathlib.Path]) -> Cine:
    """A `Cine` from a Cine, a file path, or an array (T, H, W) / (T, H, W, 3) (1 mm pixels)."""
    if isinstance(frames, Cine):
        return frames
    if isinstance(frames, (str, pathlib.Path)):
        return Cine.read(frames)
    if not isinstance(frames, np.ndarray):
        raise InvalidVolumeError(f"frames must be a Cine, a file path or a numpy array, got {type(frames).__name__}")
    return Cine(frames)


def frame_prompt(frame: int, positive: Sequence = (), negative: Sequence = (), box: Optional[Sequence] = None,
                 mask: Optional[np.ndarray] = None) -> Prompt:
    """A prompt on frame ``frame`` from (x, y) pixel points (x = column, y = row), a box
    (x0, y0, x1, y1) or a (H, W) mask: the cine counterpart of `Prompt.from_points`."""
    if mask is not None:
        return Prompt.from_mask(mask, "K", frame)
    with_frame = lambda points: [(float(x), float(y), frame) for x, y in np.asarray(points, float).reshape(-1, 2)]  # noqa: E731
    corners = None if box is None else with_frame(np.asarray(box, float).reshape(2, 2))
    return Prompt.from_points(with_frame(positive), with_frame(negative), axis="K", box=corners)


def prompt_on_frame(prompt: Prompt, frame: int) -> Prompt:
    """A prompt placed on one frame shown as a single-slice volume (what a click on Slicer's
    proxy volume gives: axis K, slice 0) moved to frame ``frame`` of the cine."""
    if prompt.axis != TIME_AXIS:
        raise InvalidPromptError(
            "the prompt lies across the frame, not on it: click in a slice view that shows the frame face-on")
    points = np.array(prompt.points, dtype=np.float64).reshape(-1, 3)
    points[:, TIME_AXIS] = frame
    box = None
    if prompt.box is not None:
        box = np.array(prompt.box, dtype=np.float64)
        box[:, TIME_AXIS] = frame
    return dataclasses.replace(prompt, slice_index=int(frame), points=points, box=box)


def segment_sequence(
    frames: Union[Cine, np.ndarray, str, pathlib.Path],
    prompt: Union[Prompt, Sequence[Prompt]],
    model: Union[str, pathlib.Path, Checkpoint] = MEMSAM_DEFAULT,
    device: str = "auto",
    threshold: Optional[float] = None,
    memory_frames: Optional[int] = None,
    deep_update_every: Optional[int] = None,
    seed: int = 1234,
    progress: Optional[ProgressCallback] = None,
    cancel=None,
    speed=None,
) -> SequenceResult:
    """Segment the structure marked on one frame through every frame of a cine loop.

    frames: a `Cine`, a file (.seq.nrrd, 2D+t NRRD/NIfTI, multi-frame DICOM) or an array
        (T, H, W) / (T, H, W, 3); colour frames are converted to grey (luma). Never modified.
    prompt: a `Prompt` on axis K whose slice is the frame (see `frame_prompt`): positive/negative
        points, a box or a mask, on any frame; propagation runs forward and backward from it.
    model: ``"memsam"`` (the weights folder's memsam.pth), a MemSAM checkpoint file, a registered
        MemSAM name, or a SAM 2 / MedSAM-2 / LiteMedSAM name for zero-shot propagation.
    threshold: on the probability; default 0.6 for MemSAM (the reference), 0.5 otherwise.
    memory_frames: MemSAM reads at most this many earlier frames (the first written plus the
        latest; default 16, None-equivalent for clips up to 17 frames). deep_update_every, seed:
        the sensory-memory refresh (see `MemSAM.forward_clip`).
    progress, cancel: as in `segment_volume`.
    speed: a `SpeedOptions`: for MemSAM its ``threads``, ``backend`` (where the ViT-B image encoder runs:
        "auto" = OpenVINO on the CPU when installed) and ``precision``; a zero-shot model takes it whole.
    """
    from ..runtime.devices import out_of_memory_as_device_error, resolve_device, set_cpu_threads
    from ..volume3d.segment import SpeedOptions

    started = time.perf_counter()
    monitor = Monitor(progress, cancel)
    cine = as_cine(frames)
    cine.check_segmentable()
    prompt = _single_prompt(prompt)
    grid = cine.time_volume()
    prompt.check(grid, slice_word="frame")
    checkpoint = _registered(model)
    memsam = is_memsam(model)  # else a 3D engine runs along time, zero-shot
    if checkpoint is not None and checkpoint.engine not in VOLUME_ENGINES + ("memsam",):
        raise CheckpointError(f"{checkpoint.name} is a {checkpoint.engine} checkpoint, not MemSAM weights nor a "
                              "model that can propagate through frames")
    if memory_frames is not None and (isinstance(memory_frames, bool) or not isinstance(memory_frames, int)
                                      or memory_frames < 1):
        raise ValueError(f"memory_frames must be a count of at least 1, got {memory_frames!r}")
    if memory_frames is not None and not memsam:
        raise ValueError(f"memory_frames sets MemSAM's memory; {checkpoint.name} propagates without it "
                         "(zero-shot): leave memory_frames out")
    speed = SpeedOptions() if speed is None else speed
    if not isinstance(speed, SpeedOptions):
        raise ValueError(f"speed must be a SpeedOptions, got {type(speed).__name__}")
    torch_device = resolve_device(device)
    with out_of_memory_as_device_error(torch_device):
        if not memsam:
            return _zero_shot(cine, grid, prompt, checkpoint, device, threshold, progress, cancel, started, speed)
        from ..engines.memsam import DEFAULT_MEMORY_FRAMES, load_memsam_engine
        from ..models.memsam import MASK_THRESHOLD

        threshold = MASK_THRESHOLD if threshold is None else check_threshold(threshold)
        memory_frames = DEFAULT_MEMORY_FRAMES if memory_frames is None else memory_frames
        monitor.report(0.0, "loading MemSAM")
        set_cpu_threads(speed.threads)
        engine = load_memsam_engine(checkpoint or model, torch_device, progress=monitor.sub(0.0, 0.02).report,
                                    backend=speed.backend, precision=speed.precision)
        logits = engine.segment(memsam_range(grid.array), prompt.to_slice_prompt(), monitor.sub(0.02, 1.0),
                                memory_frames=memory_frames, deep_update_every=deep_update_every, seed_rng=seed)
    probability = sigmoid(logits)
    monitor.report(1.0, f"done: {cine.n_frames} frames")
    return SequenceResult(
        masks=(probability > threshold).astype(np.uint8), probability=probability, ijk_to_ras=cine.ijk_to_ras.copy(),
        index_values=cine.index_values, index_name=cine.index_name, index_unit=cine.index_unit, model=engine.name,
        device=str(torch_device), prompt_frame=prompt.slice_index, threshold=threshold,
        seconds=time.perf_counter() - started, zero_shot=False, memory_frames=memory_frames,
        weights_verified=engine.weights_verified)


def _single_prompt(prompt) -> Prompt:
    prompts = [prompt] if isinstance(prompt, Prompt) else list(prompt or [])
    if not prompts:
        raise InvalidPromptError("empty prompt: give at least one positive point, a box or a mask on one frame")
    if any(not isinstance(p, Prompt) for p in prompts):
        raise InvalidPromptError("expected MemSegLogic.Prompt objects (see MemSegLogic.cine.segment.frame_prompt)")
    if len(prompts) > 1:
        raise InvalidPromptError(
            f"prompts on {len(prompts)} frames: MemSAM propagates from one prompted frame; keep the one on the "
            "frame where the structure is clearest")
    if prompts[0].axis != TIME_AXIS:
        raise InvalidPromptError(
            f"a cine prompt lies on a frame (axis K = time), not on a {AXIS_NAMES[prompts[0].axis]} slice")
    return prompts[0]


def cine_models() -> List[Tuple[str, str]]:
    """(name, how it runs on cine loops) for every model `segment_sequence` takes, in the order a
    model list shows them: MemSAM (the user's trained weights), models trained on echo cine loops,
    then the zero-shot ones."""
    from ..runtime.checkpoints import list_checkpoints

    trained = [(c.name, "trained on echo cine loops") for c in list_checkpoints(VOLUME_ENGINES) if c.trained_on_cine]
    zero_shot = [(c.name, "zero-shot: not trained on cine loops") for c in list_checkpoints(VOLUME_ENGINES)
                 if not c.trained_on_cine]
    registered_memsam = [(c.name, "MemSAM") for c in list_checkpoints(("memsam",))]
    return [(MEMSAM_DEFAULT, "MemSAM: the weights folder's memsam.pth")] + registered_memsam + trained + zero_shot


def is_memsam(model: Union[str, pathlib.Path, Checkpoint]) -> bool:
    """True when `segment_sequence` runs ``model`` as MemSAM (with a memory: ``memory_frames``
    applies); False for the models it propagates zero-shot (SAM 2, MedSAM-2, LiteMedSAM)."""
    checkpoint = _registered(model)
    return checkpoint is None or checkpoint.engine == "memsam"


def _registered(model) -> Optional[Checkpoint]:
    if isinstance(model, Checkpoint):
        return model
    return get_checkpoint(model) if is_registered(model) else None


def _zero_shot(cine: Cine, grid, prompt: Prompt, checkpoint: Checkpoint, device, threshold, progress, cancel,
               started, speed=None):
    """A 3D engine run along time only, from the prompted frame both ways, never stopping early."""
    from ..volume3d.segment import PropagationOptions, segment_volume

    threshold = ZERO_SHOT_THRESHOLD if threshold is None else check_threshold(threshold)
    result = segment_volume(grid, prompt, model=checkpoint.name, axes=1, device=device, threshold=threshold,
                            propagation=PropagationOptions(absent_slices=0, crop=False), speed=speed,
                            progress=progress, cancel=cancel)
    return SequenceResult(
        masks=result.mask, probability=result.probability, ijk_to_ras=cine.ijk_to_ras.copy(),
        index_values=cine.index_values, index_name=cine.index_name, index_unit=cine.index_unit,
        model=checkpoint.name, device=result.device, prompt_frame=prompt.slice_index, threshold=threshold,
        seconds=time.perf_counter() - started, zero_shot=not checkpoint.trained_on_cine)

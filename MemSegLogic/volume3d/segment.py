"""`segment_volume`: one seed prompt in, a 3D mask and per-voxel probabilities out.

Plain Python over arrays or files; the Slicer adapters (`mrml`) and the CLI are thin layers on
top of this function.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import time
import warnings
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np

from ..core.geometry import AXIS_NAMES
from ..core.intensity import DEFAULT_PRESET, to_uint8
from ..core.metrics import check_threshold
from ..core.prompt import Prompt
from ..core.volume import Volume
from ..engines.backends import DEFAULT_BACKEND, DEFAULT_PRECISION, check_backend, check_precision
from ..engines.base import DEFAULT_MEMORY
from ..errors import CheckpointError, InvalidPromptError, InvalidVolumeError, MemSegWarning
from ..progress import Monitor, ProgressCallback
from ..runtime.checkpoints import DEFAULT_MODEL, VOLUME_ENGINES, get_checkpoint, list_checkpoints
from .fusion import DEFAULT_FUSION, FUSION_MODES, fuse
from .preview import PreviewCallback


@dataclasses.dataclass
class SegmentationResult:
    """``mask`` (uint8 0/1) and ``probability`` (float32 0..1, fused), both KJI on the input's
    grid. ``axis_probability`` keeps each axis' own probability (NaN where it did not look), seed
    axis first, ``seed_slices`` the prompted slices of the seed axis and ``visited_per_axis``
    how many slices each axis' passes kept."""

    mask: np.ndarray
    probability: np.ndarray
    ijk_to_ras: np.ndarray
    model: str
    device: str
    axes: int
    slices_visited: int
    seconds: float
    axis_probability: Dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    visited_per_axis: Dict[str, int] = dataclasses.field(default_factory=dict)
    fusion: str = DEFAULT_FUSION
    memory: Optional[str] = None  # memory policy used (None for engines without memory)
    seed_slices: Tuple[int, ...] = ()
    slices_encoded: int = 0  # frames the image encoder saw (visited slices + those encoded ahead)
    input_size: Optional[int] = None  # the model's input size in pixels
    skipped_axes: Dict[str, str] = dataclasses.field(default_factory=dict)  # axis name -> why not run
    segment_id: Optional[str] = None  # set when written into a Slicer segment

    def mask_volume(self) -> Volume:
        return Volume(self.mask, self.ijk_to_ras.copy())

    def fused(self, mode: str, threshold: float = 0.5):
        """(probability, mask) of this run's axes fused another way (see `MemSegLogic.volume3d.fusion`)."""
        if not self.axis_probability:  # a MemSeg server returns the fused result only
            raise ValueError("this result has no per-axis probabilities to fuse again (a MemSeg server returns "
                             "the fused result only): ask for the fusion you want in the call, "
                             "propagation=PropagationOptions(fusion=...)")
        axes = [AXIS_NAMES.index(name) for name in self.axis_probability]
        return fuse(list(self.axis_probability.values()), mode, threshold, axes, self.mask_volume().spacing,
                    self.seed_slices or None)


@dataclasses.dataclass(frozen=True)
class PropagationOptions:
    """How `segment_volume` propagates the prompt and fuses the axes (its None: these defaults).

    fusion: "weighted" (default), "mean" or "vote" (`MemSegLogic.volume3d.fusion`); weighted averages the axes
        that covered a voxel and agree with the seed axis on the seed slice, each slice weighted by its
        resolution and by the other axes' agreement, so coarse or stray axes count less than in a plain mean.
    memory: "self-sorting" (MedSAM-2's bank) or "sam2" (stock SAM 2 memory); engines without memory
        (medsam-lite) carry masks from slice to slice instead and ignore it.
    shared_memory: one bank for all passes instead of one per direction, so memories of all orientations
        are sorted together, as in the paper.
    absent_slices: a direction stops after this many slices without the object, so it does not run on
        through empty slices (0: never; None: the engine's default, 3 for MedSAM-2, 1 for medsam-lite).
    crop: later axes visit only the slices of the object's extent found by the first one plus a margin,
        since the model's cost is per slice.
    crop_frames: also crop the later axes' frames to that extent, which zooms the model in at the cost of
        context (off by default: the lost context cost more than the zoom gained).
    square_pixels: resample frames along a thick axis to square pixels for the model, and back
        (None: the engine's measured preference; LiteMedSAM does better on native frames).
    seed: seeds the memory bank's resampling, so a run is reproducible.
    other_axes_step: with axes=3, the two other axes visit every k-th slice from their seed plane and the
        fusion fills the slices between from the axes that looked there (fewer slices encoded; README "Speed").
    """

    fusion: str = DEFAULT_FUSION
    memory: str = DEFAULT_MEMORY
    shared_memory: bool = False
    absent_slices: Optional[int] = None
    crop: bool = True
    crop_frames: bool = False
    square_pixels: Optional[bool] = None
    seed: int = 0
    other_axes_step: int = 1


@dataclasses.dataclass(frozen=True)
class SpeedOptions:
    """How fast `segment_volume` runs (its None: these defaults).

    input_size: run a SAM 2 model at this input size instead of its own (a multiple of 16, e.g. 512 for a
        1024-px model), faster per slice on a CPU but coarser on small objects; see README "Speed"
        (None: the checkpoint's size).
    encode_batch: slices encoded at once ahead of the memory loop, to keep a GPU busy (None: 8 on CUDA,
        4 on MPS, 1 on CPU); out of GPU memory, the batch is halved automatically.
    compile_encoder: torch.compile the image encoder, faster per slice after minutes on the first call
        (for batch work).
    threads: CPU threads for PyTorch (and OpenVINO), to share the CPU with other work (None: PyTorch's choice).
    backend: where LiteMedSAM's (and, in `segment_sequence`, MemSAM's) image encoder runs: "auto" (OpenVINO on
        the CPU when installed, else PyTorch), "torch" or "openvino" (`MemSegLogic.engines.backends`; README
        "Backends").
    precision: "fp32" (exact) or "auto" (the backend's own default: bf16 on CPUs that have it, for OpenVINO).
    """

    input_size: Optional[int] = None
    encode_batch: Optional[int] = None
    compile_encoder: bool = False
    threads: Optional[int] = None
    backend: str = DEFAULT_BACKEND
    precision: str = DEFAULT_PRECISION

    def __post_init__(self):
        check_backend(self.backend)
        check_precision(self.precision)
        for name in ("input_size", "encode_batch", "threads"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive whole number or None, got {value!r}")


def segment_volume(
    volume: Union[Volume, str, pathlib.Path],
    prompts: Union[Prompt, Sequence[Prompt]],
    model: str = DEFAULT_MODEL,
    axes: int = 3,
    device: str = "auto",
    preset: Optional[str] = None,
    threshold: float = 0.5,
    propagation: Optional[PropagationOptions] = None,
    speed: Optional[SpeedOptions] = None,
    progress: Optional[ProgressCallback] = None,
    cancel=None,
    preview: Optional[PreviewCallback] = None,
) -> SegmentationResult:
    """Segment the object marked by ``prompts`` through the whole volume.

    volume: a `Volume` or a path to a file / DICOM folder; never modified.
    prompts: one `Prompt`, or several on different slices of the same axis (each becomes a
        conditioning slice; propagation runs forward from the first and backward from the last).
    model: a registered checkpoint name (see `MemSegLogic.runtime.checkpoints.list_checkpoints`).
    axes: 3 = six orientations (the prompt's axis both ways, then the two other axes from the
        planes through the seed, fused); 1 = the prompt's axis in both directions only.
    device: "auto" (CUDA, then MPS, then CPU), "cuda", "mps" or "cpu".
    preset: intensity preset name (`MemSegLogic.core.intensity.PRESETS`), default percentile clipping.
    threshold: probability above which a voxel is in the mask.
    propagation: `PropagationOptions` (fusion, memory, early stop, cropping, seed); None: the defaults.
    speed: `SpeedOptions` (input size, encode batch, compile, threads); None: the defaults.
    progress: called as ``progress(fraction, message)``; cancel: a `threading.Event` that stops
        the run promptly with `SegmentationCancelled`.
    preview: called with a `SliceUpdate` for each slice as soon as a pass has segmented it, for
        showing the result while it is computed (`PreviewMask` collects them into a volume).
    """
    from ..engines import load_engine
    from ..engines.memory_bank import memory_banks
    from ..runtime.devices import check_memory, out_of_memory_as_device_error, resolve_device, set_cpu_threads
    from .propagation import check_axes, check_step, propagate_volume

    started = time.perf_counter()
    monitor = Monitor(progress, cancel)
    if isinstance(volume, (str, os.PathLike)):
        volume = Volume.read(volume)
    elif not isinstance(volume, Volume):
        raise InvalidVolumeError(f"volume must be a MemSegLogic.Volume or an image file path, got "
                                 f"{type(volume).__name__}: wrap an array as Volume(array_kji, ijk_to_ras)")
    volume.check_segmentable()
    seeds, axis = _seeds(volume, prompts)
    check_axes(axes)
    threshold = check_threshold(threshold)
    propagation = PropagationOptions() if propagation is None else propagation
    check_step(propagation.other_axes_step)
    speed = SpeedOptions() if speed is None else speed
    if propagation.fusion not in FUSION_MODES:
        raise ValueError(f"fusion must be one of {', '.join(FUSION_MODES)}, got {propagation.fusion!r}")
    banks = memory_banks(propagation.memory, shared=propagation.shared_memory, seed=propagation.seed)
    checkpoint = get_checkpoint(model)
    if checkpoint.engine not in VOLUME_ENGINES:
        raise CheckpointError(f"{checkpoint.name} is a {checkpoint.engine} checkpoint, not a 3D segmenter: use one of "
                              f"{', '.join(c.name for c in list_checkpoints(VOLUME_ENGINES))}"
                              + (" (MemSAM runs on cine loops: segment_sequence)" if checkpoint.engine == "memsam" else ""))
    uses_memory = checkpoint.engine == "medsam2"
    checkpoint = _at_input_size(checkpoint, speed.input_size)
    torch_device = resolve_device(device)
    check_memory(volume.array.size, axes, checkpoint.size_bytes or 0, torch_device)
    set_cpu_threads(speed.threads)
    if not uses_memory and (speed.encode_batch is not None or speed.compile_encoder):
        warnings.warn(f"encode_batch and compile_encoder apply to MedSAM-2 models; {checkpoint.name} ignores them",
                      MemSegWarning, stacklevel=2)
    if uses_memory and (speed.backend not in ("auto", "torch") or speed.precision != DEFAULT_PRECISION):
        warnings.warn(f"backend and precision apply to medsam-lite; {checkpoint.name} runs on PyTorch",
                      MemSegWarning, stacklevel=2)

    monitor.report(0.0, f"loading {checkpoint.name}")
    engine_options = ({"encode_batch": speed.encode_batch, "compile_encoder": speed.compile_encoder or None}
                      if uses_memory else {"backend": speed.backend, "precision": speed.precision})
    engine = load_engine(checkpoint, torch_device, progress=monitor.sub(0.0, 0.05).report, **engine_options)
    encoded_before = engine.slices_encoded
    image = to_uint8(volume.array, preset or DEFAULT_PRESET)  # a copy: the input stays as it was
    with out_of_memory_as_device_error(torch_device):
        passes = propagate_volume(engine, image, volume.spacing, axis, seeds, axes, monitor.sub(0.05, 0.97),
                                  absent_slices=propagation.absent_slices, crop=propagation.crop,
                                  crop_frames=propagation.crop_frames, threshold=threshold,
                                  memory=banks if uses_memory else None, square_pixels=propagation.square_pixels,
                                  preview=preview, other_axes_step=propagation.other_axes_step)
    monitor.report(0.97, "fusing axes" if axes > 1 else "thresholding")
    probability, mask = fuse([p.probability for p in passes], propagation.fusion, threshold,
                             [p.axis for p in passes], volume.spacing, passes[0].seeds)
    visited = {p.name: p.slices_visited for p in passes}
    monitor.report(1.0, "done: " + ", ".join(f"{n} {name} slices" for name, n in visited.items())
                   + "".join(f"; {name} skipped ({why})" for name, why in passes.skipped.items()))
    return SegmentationResult(
        mask=mask, probability=probability, ijk_to_ras=volume.ijk_to_ras.copy(), model=checkpoint.name,
        device=str(torch_device), axes=axes, slices_visited=sum(visited.values()),
        seconds=time.perf_counter() - started, axis_probability={p.name: p.probability for p in passes},
        visited_per_axis=visited, fusion=propagation.fusion,
        memory=propagation.memory if uses_memory else None,
        seed_slices=passes[0].seeds, skipped_axes=dict(passes.skipped), input_size=checkpoint.image_size,
        slices_encoded=engine.slices_encoded - encoded_before)


def _at_input_size(checkpoint, input_size: Optional[int]):
    """The checkpoint run at another input size (SAM 2 models only: their configs take any
    multiple of 16; LiteMedSAM's 256 is fixed)."""
    if input_size is None or input_size == checkpoint.image_size:
        return checkpoint
    if checkpoint.engine != "medsam2":
        raise ValueError(f"{checkpoint.name} runs at its own {checkpoint.image_size} px only; "
                         "input_size applies to SAM 2 / MedSAM-2 models")
    if input_size < 128 or input_size % 16:
        raise ValueError(f"input_size must be a multiple of 16 and at least 128, got {input_size}")
    return dataclasses.replace(checkpoint, image_size=int(input_size))


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

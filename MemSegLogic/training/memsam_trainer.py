"""Semi-supervised MemSAM training (``memseg train-memsam``), as the reference ``train_video.py``
(``dengxl0520/MemSAM``) trains it, with resumable, verifiable checkpoints.

The recipe:

* **What is trained**: the reference's parameters (`MemSAM.freeze_for_training`): the whole memory
  module and the image encoder's adapters, CNN branch, position-embedding shrink and global
  rel-pos tables. SAM's patch embedding, ViT blocks, neck, prompt encoder and mask decoder stay
  frozen at their initial (SAM) weights.
* **Data**: one clip per step (the reference's batch size is 1): ``clip_length`` frames from the
  first labelled frame to the last, one click on the first (see `clips`), with the reference's
  augmentation.
* **Loss** (`losses.memsam_loss`): 0.2 BCE (pos. weight 2) + 0.8 soft Dice. ``semi=True``: only the
  clip's first and last frames count (the paper's CAMUS-Semi / EchoNet setting, the reference's
  ``--semi``); ``semi=False``: every labelled clip frame.
* **Optimiser**: Adam, lr 1e-4, betas (0.9, 0.999), no weight decay, constant rate (the
  reference's default; its optional warm-up is not reproduced).
* **Validation** after every epoch: fixed click, no augmentation, deep-update draws from seed 1234
  (as ``test_video.py``), sigmoid > 0.6, Dice per labelled clip frame. ``val_dice`` averages every
  labelled frame (the reference's evaluation); ``val_dice_interior`` only the frames strictly inside
  the clip, which semi-supervised training never sees a label of. The best epoch is chosen by the
  interior Dice when the validation loops have such labels (CAMUS), else by ``val_dice``.
* **Precision**: with ``amp`` on CUDA, bf16 autocast (fp16 with a gradient scaler where bf16 is not
  supported); fp32 elsewhere.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import pathlib
import time
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..errors import CheckpointError, MemSegError, SegmentationCancelled
from ..models.memsam import MASK_THRESHOLD, MemSAM, MemSAMConfig, build_memsam, init_from_sam, load_memsam
from ..runtime import checkpoints
from ..runtime.devices import resolve_device
from . import checkpointing as files
from .clips import make_clip
from .datasets import CineSource, LabelledCine, TrainingDataError, read_dataset
from .losses import dice_score, memsam_loss

__all__ = [
    "EpochRecord",
    "TrainingCancelled",
    "TrainingError",
    "TrainingOptions",
    "TrainingResult",
    "ValidationScores",
    "build_training_model",
    "evaluate_memsam",
    "split_sources",
    "train_memsam",
]

VALIDATION_DEEP_UPDATE_SEED = 1234  # test_video.py seeds numpy with 1234
STATE_FORMAT = 1
Source = Union[CineSource, LabelledCine]
Data = Union[str, pathlib.Path, Sequence[Source]]


class TrainingError(MemSegError):
    """A training run cannot start or continue as asked (output folder in use, resume mismatch...)."""


class TrainingCancelled(SegmentationCancelled):
    """Training was cancelled; the last complete checkpoint (if any) is kept as it was."""


@dataclasses.dataclass(frozen=True)
class TrainingOptions:
    """What defines a run; stored with its checkpoints so that a resumed run continues the same run."""

    lr: float = 1e-4
    clip_length: int = 10
    semi: bool = True
    augment: bool = True
    steps_per_epoch: Optional[int] = None  # None: one clip per training loop per epoch
    seed: int = 0
    init: Optional[str] = None
    layout: str = "auto"  # how a data folder is read (with the two reader options below)
    camus_ed_es_only: bool = False
    label_value: Optional[int] = None


@dataclasses.dataclass
class EpochRecord:
    epoch: int  # 1-based
    train_loss: float
    val_dice: Optional[float]
    val_dice_interior: Optional[float]
    steps: int
    seconds: float


@dataclasses.dataclass
class ValidationScores:
    dice: Optional[float]  # mean over every labelled clip frame
    dice_interior: Optional[float]  # mean over labelled frames strictly inside the clip
    frames: int
    interior_frames: int
    per_loop: Dict[str, List[Tuple[int, float]]]  # name -> (loop frame index, Dice)


@dataclasses.dataclass
class TrainingResult:
    output: pathlib.Path
    last_checkpoint: pathlib.Path
    best_checkpoint: Optional[pathlib.Path]
    best_epoch: Optional[int]
    best_score: Optional[float]
    history: List[EpochRecord]
    train_names: List[str]
    val_names: List[str]
    device: str
    precision: str  # "fp32", "bf16" or "fp16"
    options: TrainingOptions
    config: MemSAMConfig


# --- model ------------------------------------------------------------------------------------------
def build_training_model(init: Optional[Union[str, pathlib.Path]] = None, config: Optional[MemSAMConfig] = None,
                         seed: int = 0) -> MemSAM:
    """The model a run starts from, with the reference's trainable parameters set.

    ``init``: None = random weights (seeded: the same seed gives the same model); a Meta SAM
    checkpoint (``sam_vit_b_01ec64.pth``, or the registered name ``"sam-vit-b"``, fetched if
    needed) fills the SAM parts (`init_from_sam`), the rest random; a MemSAM checkpoint
    (official layout) is loaded strictly (`load_memsam`) to fine-tune it further.
    """
    if init is None:
        torch.manual_seed(seed)
        model = build_memsam(config or MemSAMConfig())
    else:
        path = _init_path(init)
        state = _read_state_dict(path)
        if _is_memsam_state(state):
            try:
                model = load_memsam(state, config=config)
            except ValueError as error:
                raise CheckpointError(f"{path} is not a MemSAM checkpoint matching the configuration: {error}") from None
        else:
            torch.manual_seed(seed)
            model = build_memsam(config or MemSAMConfig())
            try:
                init_from_sam(model, state)
            except ValueError as error:
                raise CheckpointError(f"{path} cannot initialise MemSAM: {error}") from None
    model.freeze_for_training()
    return model


def _init_path(init: Union[str, pathlib.Path]) -> pathlib.Path:
    path = pathlib.Path(init).expanduser()
    if path.is_file():
        return path
    if isinstance(init, str):
        try:
            checkpoint = checkpoints.get_checkpoint(init)
        except CheckpointError:
            checkpoint = None
        if checkpoint is not None:
            return checkpoints.ensure_checkpoint(checkpoint)
    raise CheckpointError(
        f"--init {init}: no such file, and not a registered checkpoint name (e.g. sam-vit-b for Meta's "
        "sam_vit_b_01ec64.pth)")


def _is_memsam_state(state: Mapping[str, torch.Tensor]) -> bool:
    """A MemSAM checkpoint has memory.* entries (possibly under DataParallel's module.); SAM has none."""
    return any(k.removeprefix("module.").startswith("memory.") for k in state)


def _read_state_dict(path: pathlib.Path) -> Dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated file, not a torch file, pickled code...
        raise CheckpointError(f"cannot read {path} as model weights: {error}") from None
    for key in ("model", "state_dict"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict (name -> tensor)")
    return dict(obj)


# --- data -------------------------------------------------------------------------------------------
def _as_sources(data: Data, layout: str, camus_ed_es_only: bool, label_value: Optional[int]) -> List[Source]:
    if isinstance(data, (str, pathlib.Path)):
        return read_dataset(data, layout, camus_ed_es_only=camus_ed_es_only, label_value=label_value)
    sources = list(data)
    if not sources:
        raise TrainingDataError("no training loops were given")
    return sources


def split_sources(sources: Sequence[Source], val_fraction: float = 0.2,
                  split: Optional[Union[str, pathlib.Path, Mapping[str, Sequence[str]]]] = None
                  ) -> Tuple[List[Source], List[Source]]:
    """(train, validation) loops, whole patients on one side.

    Precedence: ``split`` (a mapping or JSON file ``{"train": [...], "val": [...]}`` of loop or
    patient names, the reference's split-file format; other keys such as "test" are ignored);
    else the dataset's own split (EchoNet-Dynamic's TRAIN/VAL; TEST is left out); else the last
    ``val_fraction`` of the patients in sorted order (the reference splits CAMUS sequentially).
    """
    if split is not None:
        if not isinstance(split, Mapping):
            try:
                split = json.loads(pathlib.Path(split).read_text())
            except (OSError, ValueError) as error:
                raise TrainingDataError(f"cannot read the split file {split}: {error}") from None
        wanted = {side: set(split.get(side, ())) for side in ("train", "val")}
        train = [s for s in sources if s.name in wanted["train"] or s.group in wanted["train"]]
        val = [s for s in sources if s.name in wanted["val"] or s.group in wanted["val"]]
    elif any(s.split for s in sources):
        train = [s for s in sources if s.split in (None, "train")]
        val = [s for s in sources if s.split == "val"]
    else:
        if not 0.0 <= val_fraction < 1.0:
            raise TrainingDataError(f"val_fraction must be in [0, 1); got {val_fraction}")
        groups = sorted({s.group for s in sources})
        count = int(round(len(groups) * val_fraction))
        if val_fraction > 0 and len(groups) > 1:
            count = min(max(count, 1), len(groups) - 1)
        val_groups = set(groups[len(groups) - count:]) if count else set()
        train = [s for s in sources if s.group not in val_groups]
        val = [s for s in sources if s.group in val_groups]
    if not train:
        raise TrainingDataError("the training split is empty: no loop to train on")
    return train, val


def _check_sources(sources: Sequence[Source], what: str) -> None:
    for source in sources:
        labelled = source.labelled_frames
        if len(labelled) < 2:
            raise TrainingDataError(
                f"{what} loop {source.name} has {len(labelled)} labelled frame(s): a MemSAM clip runs from the first "
                "labelled frame to the last (e.g. ED and ES), so each loop needs at least 2")
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise TrainingDataError(f"{what} loop names are not unique: {sorted({n for n in names if names.count(n) > 1})}")


# --- validation ---------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate_memsam(model: MemSAM, sources: Sequence[Source], clip_length: int = 10,
                    autocast: Optional[Callable[[], contextlib.AbstractContextManager]] = None,
                    before_clip: Optional[Callable[[int], None]] = None) -> ValidationScores:
    """Dice of ``model`` on the clips of ``sources`` (fixed click, no augmentation), per labelled frame.

    ``before_clip(i)`` is called before each clip (progress, cancel). The model is put in eval mode.
    """
    model.eval()
    device = model.device
    per_loop: Dict[str, List[Tuple[int, float]]] = {}
    every, interior = [], []
    for number, source in enumerate(sources):
        if before_clip is not None:
            before_clip(number)
        clip = make_clip(source.load(), clip_length, model.config.image_size)
        with (autocast() if autocast else contextlib.nullcontext()):
            logits = model.forward_clip(clip.frames.to(device), clip.point_xy, clip.point_label,
                                        seed=VALIDATION_DEEP_UPDATE_SEED)
        predicted = torch.sigmoid(logits.float())[:, 0].cpu() > MASK_THRESHOLD
        scores = per_loop.setdefault(source.name, [])
        for position, (frame, labelled) in enumerate(zip(clip.frame_indices, clip.labelled)):
            if not labelled:
                continue
            score = dice_score(predicted[position], clip.masks[position] > 0.5)
            scores.append((frame, score))
            every.append(score)
            if 0 < position < len(clip.frame_indices) - 1:
                interior.append(score)
    return ValidationScores(
        dice=float(np.mean(every)) if every else None,
        dice_interior=float(np.mean(interior)) if interior else None,
        frames=len(every), interior_frames=len(interior), per_loop=per_loop)


# --- the run ---------------------------------------------------------------------------------------
class _Reporter:
    """Forwards progress and turns a set cancel event into `TrainingCancelled` with where things stand."""

    def __init__(self, progress, cancel, output: pathlib.Path):
        self.progress, self.cancel, self.output = progress, cancel, output
        self.saved_epoch: Optional[int] = None

    def check(self, doing: str) -> None:
        if self.cancel is not None and self.cancel.is_set():
            kept = (f"the last complete checkpoint ({files.LAST_MODEL}, epoch {self.saved_epoch}) in {self.output} "
                    "is kept; continue with resume" if self.saved_epoch else "no checkpoint had been written yet")
            raise TrainingCancelled(f"training cancelled during {doing}; {kept}")

    def report(self, fraction: float, message: str) -> None:
        if self.progress is not None:
            self.progress(min(max(fraction, 0.0), 1.0), message)


def _precision(device: torch.device, amp: bool) -> str:
    if not amp or device.type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def _autocast_factory(device: torch.device, precision: str):
    if precision == "fp32":
        return lambda: contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return lambda: torch.autocast(device.type, dtype=dtype)


def _rng_state(rng: np.random.Generator) -> dict:
    state = {"numpy": rng.bit_generator.state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(rng: np.random.Generator, state: dict) -> None:
    rng.bit_generator.state = state["numpy"]
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _selection_score(record: EpochRecord) -> Optional[float]:
    return record.val_dice_interior if record.val_dice_interior is not None else record.val_dice


def train_memsam(
    data: Data,
    output: Union[str, pathlib.Path],
    *,
    layout: str = "auto",
    validation: Optional[Data] = None,
    split: Optional[Union[str, pathlib.Path, Mapping[str, Sequence[str]]]] = None,
    val_fraction: float = 0.2,
    init: Optional[Union[str, pathlib.Path]] = None,
    resume: bool = False,
    epochs: int = 100,
    lr: float = 1e-4,
    clip_length: int = 10,
    semi: bool = True,
    augment: bool = True,
    steps_per_epoch: Optional[int] = None,
    device="auto",
    amp: bool = True,
    seed: int = 0,
    config: Optional[MemSAMConfig] = None,
    camus_ed_es_only: bool = False,
    label_value: Optional[int] = None,
    progress: Optional[Callable[[float, str], None]] = None,
    cancel=None,
    on_epoch: Optional[Callable[[EpochRecord], None]] = None,
) -> TrainingResult:
    """Train MemSAM on labelled echo loops; checkpoints go to ``output`` (see `checkpointing`).

    Args:
        data: a folder in ``layout`` ("auto", "camus", "echonet", "slicer"; see `datasets`), or a
            list of `LabelledCine` / `CineSource`.
        validation: separate validation loops (folder or list); else ``split``, the dataset's own
            split, or ``val_fraction`` of the patients (`split_sources`).
        init: None (random, for tests), a Meta SAM ViT-B checkpoint path or ``"sam-vit-b"`` (the
            reference's starting point), or a MemSAM checkpoint (see `build_training_model`).
        resume: continue the run in ``output`` from its last complete epoch, with its stored
            options (everything from ``layout`` to ``seed`` except ``validation``, ``split``,
            ``val_fraction``, ``device`` and ``amp``), configuration, optimiser and random state;
            ``epochs`` is the new total. The data must give the same training/validation loops.
            Without it, an ``output`` that already holds a run is refused.
        epochs: total epochs (the reference: 100 for CAMUS, 30 for EchoNet-Dynamic).
        steps_per_epoch: clips per epoch (default: one per training loop).
        progress(fraction, message), cancel (``threading.Event``): as elsewhere in MemSeg; a cancel
            raises `TrainingCancelled` between steps and leaves the last complete checkpoint intact.
        on_epoch(record): called after each epoch's checkpoints are written.
    """
    output = pathlib.Path(output)
    torch_device = resolve_device(device)
    precision = _precision(torch_device, amp)
    if epochs < 1:
        raise TrainingError(f"epochs must be at least 1; got {epochs}")
    state = _load_resume_state(output / files.LAST_STATE) if resume else None
    if state is not None:
        options, config = TrainingOptions(**state["options"]), MemSAMConfig(**state["config"])
    else:
        options = TrainingOptions(lr=lr, clip_length=clip_length, semi=semi, augment=augment,
                                  steps_per_epoch=steps_per_epoch, seed=seed,
                                  init=None if init is None else str(init), layout=layout,
                                  camus_ed_es_only=camus_ed_es_only, label_value=label_value)
        _check_new_run(output, options)
    train, val = _training_loops(data, validation, split, val_fraction, options)
    if state is not None:
        model = _resumed_model(output / files.LAST_MODEL, state, train, val, config)
    else:
        model = build_training_model(init, config, options.seed)
        config = model.config
    run = _start_run(model, state, options, config, torch_device, precision, train, val, output, epochs,
                     _Reporter(progress, cancel, output))
    for epoch in range(run.start_epoch, epochs):
        record = _run_epoch(run, epoch)
        if on_epoch is not None:
            on_epoch(record)
    return _result(run)


# --- the run, step by step ----------------------------------------------------------------------------
@dataclasses.dataclass
class _Run:
    """What the epochs of one run share: its settings, loops, model, optimiser, generator and best epoch so far."""

    output: pathlib.Path
    options: TrainingOptions
    config: MemSAMConfig
    device: torch.device
    precision: str
    epochs: int  # the total, not those left
    train: List[Source]
    val: List[Source]
    model: MemSAM
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    rng: np.random.Generator
    reporter: _Reporter
    history: List[EpochRecord] = dataclasses.field(default_factory=list)
    best_epoch: Optional[int] = None
    best_score: Optional[float] = None
    start_epoch: int = 0  # epochs already complete (resume)
    global_step: int = 0
    autocast: Callable[[], contextlib.AbstractContextManager] = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.autocast = _autocast_factory(self.device, self.precision)

    @property
    def steps(self) -> int:
        """Training clips per epoch (default: one per training loop)."""
        return self.options.steps_per_epoch or len(self.train)

    @property
    def units(self) -> int:
        """Progress units per epoch: one per training step and one per validation clip."""
        return self.steps + len(self.val)


def _load_resume_state(last_state: pathlib.Path) -> dict:
    """The stored state of the run to resume; refused if another state format wrote it (its keys could differ)."""
    state = files.load_training_state(last_state)
    if state.get("format") != STATE_FORMAT:
        raise TrainingError(f"{last_state} was written by an incompatible MemSeg version")
    return state


def _check_new_run(output: pathlib.Path, options: TrainingOptions) -> None:
    """Refuse an ``output`` that already holds a run (a new run would overwrite it) and options no run can use."""
    if (output / files.LAST_MODEL).exists() or (output / files.LAST_STATE).exists():
        raise TrainingError(
            f"{output} already holds a training run ({files.LAST_MODEL}): continue it with resume "
            "(--resume) or choose another output folder")
    if options.clip_length < 2:
        raise TrainingError(
            f"clip_length must be at least 2 (first and last labelled frames); got {options.clip_length}")
    if options.steps_per_epoch is not None and options.steps_per_epoch < 1:
        raise TrainingError(f"steps_per_epoch must be at least 1; got {options.steps_per_epoch}")
    if not options.lr > 0:
        raise TrainingError(f"the learning rate must be positive; got {options.lr}")


def _training_loops(data: Data, validation: Optional[Data],
                    split: Optional[Union[str, pathlib.Path, Mapping[str, Sequence[str]]]], val_fraction: float,
                    options: TrainingOptions) -> Tuple[List[Source], List[Source]]:
    """(train, validation) loops, read with the run's reader options and checked before anything is written.

    Separate ``validation`` loops win (the data's own test loops are then left out), else `split_sources`.
    """
    reader_options = (options.layout, options.camus_ed_es_only, options.label_value)
    sources = _as_sources(data, *reader_options)
    if validation is not None:
        train = [s for s in sources if s.split != "test"]
        val = _as_sources(validation, *reader_options)
    else:
        train, val = split_sources(sources, val_fraction, split)
    _check_sources(train, "training")
    _check_sources(val, "validation")
    return train, val


def _resumed_model(last_model: pathlib.Path, state: Mapping, train: Sequence[Source], val: Sequence[Source],
                   config: MemSAMConfig) -> MemSAM:
    """The last complete epoch's model, only if the loops and the model file are those ``state`` was saved with.

    Other loops, or a model file replaced or half-written, would silently continue a different run.
    """
    if state["train_names"] != [s.name for s in train] or state["val_names"] != [s.name for s in val]:
        raise TrainingError(
            "the training/validation loops differ from those of the run being resumed: resume with the same "
            "data and split")
    if checkpoints.sha256_of(last_model) != state["model_sha256"]:
        raise TrainingError(
            f"{last_model} does not match its training state (SHA-256 differs): it was replaced or the "
            "run stopped while saving; resume is not possible from this folder")
    try:
        model = load_memsam(last_model, config=config)
    except ValueError as error:
        raise CheckpointError(f"{last_model} cannot be resumed: {error}") from None
    model.freeze_for_training()
    return model


def _start_run(model: MemSAM, state: Optional[Mapping], options: TrainingOptions, config: MemSAMConfig,
               device: torch.device, precision: str, train: List[Source], val: List[Source],
               output: pathlib.Path, epochs: int, reporter: _Reporter) -> _Run:
    """The model on ``device`` with Adam (the reference's settings), the gradient scaler and the run's generator.

    With ``state`` (resume) all of them continue where the last complete epoch left them, so the resumed
    run is the run that was stopped. ``output`` is created only here, once data and model are known good.
    """
    model.to(device).train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    run = _Run(output=output, options=options, config=config, device=device, precision=precision, epochs=epochs,
               train=train, val=val, model=model,
               optimizer=torch.optim.Adam(trainable, lr=options.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0),
               scaler=torch.amp.GradScaler(device.type, enabled=precision == "fp16"),
               rng=np.random.default_rng(options.seed), reporter=reporter)
    if state is not None:
        run.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            run.scaler.load_state_dict(state["scaler"])
        _restore_rng(run.rng, state["rng"])
        run.history = [EpochRecord(**r) for r in state["history"]]
        run.best_epoch, run.best_score = state["best_epoch"], state["best_score"]
        run.start_epoch, run.global_step = int(state["epoch"]), int(state["global_step"])
    output.mkdir(parents=True, exist_ok=True)
    reporter.saved_epoch = run.start_epoch or None
    return run


def _run_epoch(run: _Run, epoch: int) -> EpochRecord:
    """Train, validate and save epoch ``epoch`` (0-based); its record is in ``run.history`` afterwards.

    A cancel is honoured before the save starts, never during it, so the last complete checkpoint stays whole.
    """
    started = time.perf_counter()
    losses = _train_epoch(run, epoch)
    scores = _validate(run, epoch)
    record = EpochRecord(
        epoch=epoch + 1, train_loss=float(np.mean(losses)),
        val_dice=scores.dice if scores else None, val_dice_interior=scores.dice_interior if scores else None,
        steps=len(losses), seconds=time.perf_counter() - started)
    run.history.append(record)
    run.reporter.check(f"epoch {epoch + 1} (before saving it)")
    _save_epoch(run, record)
    run.reporter.saved_epoch = epoch + 1
    _report_epoch(run, record)
    return record


def _train_epoch(run: _Run, epoch: int) -> List[float]:
    """The losses of one epoch's ``run.steps`` clips, the training loops in a fresh random order each pass.

    The whole order is drawn before the first clip; keep it so, since an exact resume replays the
    generator's draws in the order they were made.
    """
    run.model.train()
    steps, train = run.steps, run.train
    order = np.concatenate([run.rng.permutation(len(train)) for _ in range(-(-steps // len(train)))])[:steps]
    losses = []
    for step, index in enumerate(order):
        run.reporter.check(f"epoch {epoch + 1}")
        losses.append(_train_step(run, train[int(index)]))
        run.global_step += 1
        run.reporter.report((epoch + (step + 1) / run.units) / run.epochs,
                            f"epoch {epoch + 1}/{run.epochs} step {step + 1}/{steps}: loss {losses[-1]:.4f}")
    return losses


def _train_step(run: _Run, source: Source) -> float:
    """One optimiser step on one clip of ``source``; returns its loss.

    Random draws come in a fixed order (the clip's click and augmentation, then the deep-update seed),
    which an exact resume relies on. ``semi``: only the clip's first and last frames are supervised.
    """
    options = run.options
    clip = make_clip(source.load(), options.clip_length, run.config.image_size, run.rng, options.augment)
    deep_update_seed = int(run.rng.integers(2 ** 31 - 1))
    last = len(clip.frame_indices) - 1
    supervised = [0, last] if options.semi else [i for i, known in enumerate(clip.labelled) if known]
    with run.autocast():
        logits = run.model.forward_clip(clip.frames.to(run.device), clip.point_xy, clip.point_label,
                                        seed=deep_update_seed)
    loss = memsam_loss(logits[supervised, 0], clip.masks[supervised].to(run.device))
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    run.scaler.step(run.optimizer)
    run.scaler.update()
    return float(loss.detach())


def _validate(run: _Run, epoch: int) -> Optional[ValidationScores]:
    """Scores of the model after epoch ``epoch`` on the validation loops (None without any).

    Progress and cancel are checked before each clip, so a long validation can be stopped too.
    """
    def before_clip(number: int) -> None:
        run.reporter.check(f"validation of epoch {epoch + 1}")
        run.reporter.report((epoch + (run.steps + number) / run.units) / run.epochs,
                            f"epoch {epoch + 1}/{run.epochs}: validating {number + 1}/{len(run.val)}")

    if not run.val:
        return None
    return evaluate_memsam(run.model, run.val, run.options.clip_length, run.autocast, before_clip)


def _save_epoch(run: _Run, record: EpochRecord) -> None:
    """Write the model (+ ``.sha256``), then the best copy, then the state that names the model's digest.

    In this order a run stopped while saving leaves a state whose digest does not match the model,
    which resume refuses rather than continue from mismatched files. ``history.json`` comes last.
    """
    last_model = run.output / files.LAST_MODEL
    digest = files.save_model_checkpoint(run.model, last_model)
    score = _selection_score(record)
    if score is not None and (run.best_score is None or score > run.best_score):
        run.best_epoch, run.best_score = record.epoch, score
        files.copy_model_checkpoint(last_model, run.output / files.BEST_MODEL)
    files.save_training_state(_training_state(run, record.epoch, digest), run.output / files.LAST_STATE)
    files.write_json({"options": dataclasses.asdict(run.options), "precision": run.precision,
                      "device": str(run.device), "best_epoch": run.best_epoch, "best_score": run.best_score,
                      "epochs": [dataclasses.asdict(r) for r in run.history]}, run.output / files.HISTORY)


def _training_state(run: _Run, epoch: int, digest: str) -> dict:
    """Everything resume needs after ``epoch`` (1-based), tied to the model file by its SHA-256 ``digest``."""
    return {
        "format": STATE_FORMAT,
        "epoch": epoch,
        "global_step": run.global_step,
        "options": dataclasses.asdict(run.options),
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(run.config).items()},
        "optimizer": run.optimizer.state_dict(),
        "scaler": run.scaler.state_dict() if run.scaler.is_enabled() else None,
        "rng": _rng_state(run.rng),
        "history": [dataclasses.asdict(r) for r in run.history],
        "best_epoch": run.best_epoch,
        "best_score": run.best_score,
        "model_sha256": digest,
        "train_names": [s.name for s in run.train],
        "val_names": [s.name for s in run.val],
    }


def _report_epoch(run: _Run, record: EpochRecord) -> None:
    """The epoch's summary line as a progress message (losses and, with validation loops, Dice)."""
    summary = f"epoch {record.epoch}/{run.epochs}: train loss {record.train_loss:.4f}"
    if record.val_dice is not None:
        summary += f", validation Dice {record.val_dice:.3f}"
    if record.val_dice_interior is not None:
        summary += f" (interior frames {record.val_dice_interior:.3f})"
    run.reporter.report(record.epoch / run.epochs, summary)


def _result(run: _Run) -> TrainingResult:
    """The finished run's summary; the model is left in eval mode."""
    run.model.eval()
    best = run.output / files.BEST_MODEL if run.best_epoch is not None else None
    return TrainingResult(
        output=run.output, last_checkpoint=run.output / files.LAST_MODEL, best_checkpoint=best,
        best_epoch=run.best_epoch, best_score=run.best_score, history=run.history,
        train_names=[s.name for s in run.train], val_names=[s.name for s in run.val], device=str(run.device),
        precision=run.precision, options=run.options, config=run.config)

"""Tests of MemSAM training (MemSegLogic/training): readers, clips, loss, checkpoints, resume and a
real (small) semi-supervised training run.

Run: cd /work/main && python -m pytest -q Testing/test_memsam_training.py

The training run uses a synthetic echo-like phantom: a dark "ventricle" (an ellipse) inside a
bright wall on grey tissue, multiplicative speckle, beating from ED to ES (radius shrinking
sinusoidally, the centre drifting a little) over 10 frames. Training loops carry labels on their
first and last frame only (ED/ES, the paper's semi-supervised setting); validation loops carry the
phantom's truth on every frame, and the Dice that matters is measured on the frames no training
label exists for (the clip's interior frames). No trained weights are involved: the model starts
from random weights, so the margins below are about learning at all, not about echo accuracy.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from MemSegLogic.models.memsam import MemSAMConfig, load_memsam
from MemSegLogic.runtime.checkpoints import sha256_of, verify_sidecar
from MemSegLogic.training import checkpointing
from MemSegLogic.training.clips import clip_frame_indices, fixed_click, make_clip, random_click
from MemSegLogic.training.datasets import (
    LabelledCine,
    TrainingDataError,
    detect_layout,
    echonet_trace_to_mask,
    polygon_mask,
    read_camus,
    read_dataset,
    read_echonet,
    read_slicer,
)
from MemSegLogic.training.losses import dice_score, memsam_loss
from MemSegLogic.training.memsam_trainer import (
    TrainingCancelled,
    TrainingError,
    build_training_model,
    evaluate_memsam,
    split_sources,
    train_memsam,
)

CONFIG = MemSAMConfig.tiny()
# The main run: 32 steps of 4-frame clips, about 4 minutes on the 2-core CI machine (about 7 s a step:
# MemSAM's memory keeps its full widths in the tiny configuration). Propagation to unlabelled frames is
# learnt after about 25-30 steps from random weights; the thresholds are the measured values less headroom.
TRAIN_SEEDS = range(6)
VAL_SEEDS = (100, 101)
CLIP_LENGTH = 4  # loop frames 0, 3, 6, 9: frames 3 and 6 are never labelled in training
EPOCHS, STEPS_PER_EPOCH, LEARNING_RATE = 4, 8, 1e-3


# --- phantom ------------------------------------------------------------------------------------------
def phantom_loop(seed: int, frames: int = 10, size: int = 128, labelled: str = "all") -> LabelledCine:
    """A beating echo-like ventricle; ``labelled`` "all" (truth on every frame) or "ends" (ED and ES)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    cy, cx = size * rng.uniform(0.42, 0.58), size * rng.uniform(0.42, 0.58)
    ry, rx = size * rng.uniform(0.22, 0.28), size * rng.uniform(0.13, 0.17)
    squeeze = rng.uniform(0.25, 0.35)  # ES radius = (1 - squeeze) x ED radius
    drift = rng.uniform(-3.0, 3.0, size=2)  # pixels, ED -> ES
    wall = 0.07 * size
    images, truth = [], []
    for t in range(frames):
        phase = (1 - np.cos(np.pi * t / (frames - 1))) / 2  # 0 at ED, 1 at ES
        scale = 1 - squeeze * phase
        y0, x0 = cy + drift[0] * phase, cx + drift[1] * phase
        cavity = ((yy - y0) / (ry * scale)) ** 2 + ((xx - x0) / (rx * scale)) ** 2 <= 1.0
        outer = ((yy - y0) / (ry * scale + wall)) ** 2 + ((xx - x0) / (rx * scale + wall)) ** 2 <= 1.0
        base = np.full((size, size), 80.0)
        base[outer & ~cavity] = 170.0
        base[cavity] = 25.0
        grain = rng.rayleigh(1.0, size=(size // 2, size // 2)) / np.sqrt(np.pi / 2)  # mean-1 speckle
        images.append(np.clip(base * np.kron(grain, np.ones((2, 2))), 0, 255))
        truth.append(cavity)
    keep = range(frames) if labelled == "all" else (0, frames - 1)
    return LabelledCine(f"phantom{seed}", np.rint(np.stack(images)).astype(np.uint8),
                        {t: truth[t] for t in keep}, (0.3, 0.3), group=f"patient{seed}")


# --- the training run (shared by several tests) ---------------------------------------------------------------
@pytest.fixture(scope="module")
def training_run(tmp_path_factory):
    """One semi-supervised run, cancelled after its first epoch and resumed for the rest: the
    cancel/resume path costs no extra training steps this way."""
    train = [phantom_loop(seed, labelled="ends") for seed in TRAIN_SEEDS]
    val = [phantom_loop(seed) for seed in VAL_SEEDS]
    untrained = evaluate_memsam(build_training_model(None, CONFIG, seed=0), val, CLIP_LENGTH)
    output = tmp_path_factory.mktemp("memsam-run")
    calls = []
    cancel = threading.Event()
    started = time.perf_counter()
    with pytest.raises(TrainingCancelled) as cancelled:
        train_memsam(train, output, validation=val, epochs=EPOCHS, steps_per_epoch=STEPS_PER_EPOCH,
                     lr=LEARNING_RATE, clip_length=CLIP_LENGTH, semi=True, augment=False, config=CONFIG, seed=0,
                     device="cpu", progress=lambda f, m: calls.append((f, m)), cancel=cancel,
                     on_epoch=lambda record: cancel.set())
    after_cancel = {
        "message": str(cancelled.value),
        "state": torch.load(output / checkpointing.LAST_STATE, map_location="cpu", weights_only=True),
        "model_sha256": sha256_of(output / checkpointing.LAST_MODEL),
        "partial_files": sorted(p.name for p in output.glob("*partial*")),
    }
    with pytest.raises(TrainingError, match="already holds a training run"):
        train_memsam(train, output, validation=val, epochs=EPOCHS, config=CONFIG, device="cpu")
    result = train_memsam(train, output, resume=True, validation=val, epochs=EPOCHS, device="cpu",
                          progress=lambda f, m: calls.append((f, m)))
    seconds = time.perf_counter() - started
    print(f"\nuntrained: Dice {untrained.dice:.4f}, interior {untrained.dice_interior:.4f}; training {seconds:.0f} s")
    for record in result.history:
        print(f"  {record}")
    return {"result": result, "untrained": untrained, "val": val, "progress": calls, "output": output,
            "after_cancel": after_cancel}


def test_training_lowers_the_loss_and_segments_unlabelled_frames(training_run):
    result, untrained = training_run["result"], training_run["untrained"]
    history = result.history
    assert [r.epoch for r in history] == list(range(1, EPOCHS + 1))
    assert all(r.steps == STEPS_PER_EPOCH for r in history)
    # The untrained model finds nothing; interior frames are the ones no training label exists for.
    assert untrained.interior_frames == 2 * len(VAL_SEEDS)
    assert untrained.dice_interior < 0.05
    # Measured on the 2-core CI machine (torch 2.13 CPU): epoch-mean loss 0.716 -> 0.531; validation Dice
    # 0.000 -> 0.629 on all clip frames and 0.000 -> 0.562 on the interior (never labelled) frames.
    assert history[-1].train_loss < history[0].train_loss - 0.1
    assert result.best_score == max(r.val_dice_interior for r in history)
    assert result.best_score > 0.35
    assert history[-1].val_dice > 0.4
    # the best checkpoint on its own reproduces the Dice recorded for it
    best = load_memsam(result.best_checkpoint)
    again = evaluate_memsam(best, training_run["val"], CLIP_LENGTH)
    assert again.dice_interior == pytest.approx(result.best_score, abs=1e-6)
    assert again.dice_interior > untrained.dice_interior + 0.3


def test_progress_reports_steps_and_validation(training_run):
    calls = training_run["progress"]
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions) and 0 < fractions[0] and fractions[-1] == 1.0
    messages = [m for _, m in calls]
    assert f"epoch 1/{EPOCHS} step 1/{STEPS_PER_EPOCH}: loss" in messages[0]
    assert sum("validation Dice" in m for m in messages) == EPOCHS
    assert any("validating 2/2" in m for m in messages)
    assert any(m.startswith(f"epoch {EPOCHS}/{EPOCHS} step 1/") for m in messages)  # after the resume


def test_checkpoints_are_official_layout_with_sidecar_and_only_trainable_parts_change(training_run):
    result, output = training_run["result"], training_run["output"]
    raw = torch.load(result.last_checkpoint, map_location="cpu", weights_only=True)
    model = load_memsam(result.last_checkpoint)  # strict: raises on any missing/unexpected entry
    ours = model.state_dict()
    encoder = [k for k in ours if k.startswith("image_encoder.")]
    assert set(raw) == set(ours) | {"memory.key_encoder." + k[len("image_encoder."):] for k in encoder}
    for key in encoder:
        assert torch.equal(raw["memory.key_encoder." + key[len("image_encoder."):]], raw[key])
    for name in (checkpointing.LAST_MODEL, checkpointing.BEST_MODEL):
        path = output / name
        assert (output / (name + ".sha256")).read_text().split()[0] == sha256_of(path)
        assert verify_sidecar(path)
    state = torch.load(output / checkpointing.LAST_STATE, map_location="cpu", weights_only=True)
    assert state["epoch"] == EPOCHS and state["model_sha256"] == sha256_of(result.last_checkpoint)
    history = json.loads((output / checkpointing.HISTORY).read_text())
    assert [e["epoch"] for e in history["epochs"]] == list(range(1, EPOCHS + 1))

    initial = build_training_model(None, CONFIG, seed=0)
    moved = {name for name, parameter in initial.named_parameters() if not torch.equal(parameter, ours[name])}
    trainable = {name for name, _ in initial.trainable_parameters()}
    assert moved <= trainable  # prompt encoder, mask decoder, ViT blocks, neck: untouched
    # Every trained part moved except (a) the value encoder's layer3, which the reference keeps but never
    # runs, and (b) the position-table shrink's conv and norm scale: their input, SAM's position table, is
    # all zeros in a random model (Meta's SAM weights fill it), so their gradient is zero.
    unused = {n for n in trainable if n.startswith("memory.value_encoder.layer3.")}
    zero_input = {f"image_encoder.post_pos_embed.downs.0.maxpool_conv.{i}.weight" for i in (1, 2)}
    assert not initial.image_encoder.pos_embed.any()
    assert trainable - moved == unused | zero_input and len(unused) == 15
    assert any(n.startswith("image_encoder.") for n in moved) and any(n.startswith("memory.") for n in moved)


def test_cancel_keeps_the_last_checkpoint_and_resume_continues(training_run):
    stopped, result = training_run["after_cancel"], training_run["result"]
    assert "during epoch 2" in stopped["message"] and "epoch 1" in stopped["message"]
    assert stopped["state"]["epoch"] == 1 and stopped["partial_files"] == []
    assert stopped["state"]["model_sha256"] == stopped["model_sha256"]  # the epoch-1 files, intact
    first_epoch = stopped["state"]["history"][0]
    assert dataclasses.asdict(result.history[0]) == first_epoch  # history continues, not restarted
    assert [r.epoch for r in result.history] == list(range(1, EPOCHS + 1))
    assert all(r.steps == STEPS_PER_EPOCH for r in result.history)
    # the resumed call passed no options: the run's own were restored
    assert (result.options.lr, result.options.clip_length, result.options.steps_per_epoch) == (
        LEARNING_RATE, CLIP_LENGTH, STEPS_PER_EPOCH)
    assert result.config == CONFIG


def test_resume_is_refused_for_other_data_or_an_empty_folder(training_run, tmp_path):
    train = [phantom_loop(seed, labelled="ends") for seed in TRAIN_SEEDS]
    with pytest.raises(TrainingError, match="differ from those of the run being resumed"):
        train_memsam(train[:2], training_run["output"], epochs=3, resume=True, validation=training_run["val"],
                     device="cpu")
    with pytest.raises(Exception, match="nothing to resume"):
        train_memsam(train, tmp_path / "never-ran", epochs=1, resume=True, device="cpu")


# --- errors of the training entry point -------------------------------------------------------------
def test_training_refuses_unusable_data(tmp_path):
    with pytest.raises(TrainingDataError, match="no training loops"):
        train_memsam([], tmp_path / "a", config=CONFIG, device="cpu")
    single = phantom_loop(1, labelled="ends").keep_labels([0])
    with pytest.raises(TrainingDataError, match="1 labelled frame"):
        train_memsam([single, phantom_loop(2, labelled="ends")], tmp_path / "b", val_fraction=0.0, config=CONFIG,
                     device="cpu")
    with pytest.raises(TrainingDataError, match="holds no training data"):
        train_memsam(tmp_path, tmp_path / "c", config=CONFIG, device="cpu")
    assert not (tmp_path / "b").exists()  # nothing is written before the data is known to be usable


# --- clips, clicks, loss --------------------------------------------------------------------------------
def test_clip_frames_follow_the_reference_sampling():
    assert clip_frame_indices(0, 9, 10) == list(range(10))
    assert clip_frame_indices(0, 9, 4) == [0, 3, 6, 9]
    assert clip_frame_indices(3, 20, 10) == [3, 4, 6, 8, 10, 12, 14, 16, 18, 20]  # int(3 + 17/9 * i)
    assert clip_frame_indices(5, 7, 4) == [5, 5, 6, 7]  # short loops repeat frames
    with pytest.raises(ValueError):
        clip_frame_indices(0, 9, 1)


def test_clicks_and_clip_tensors():
    mask = np.zeros((8, 10), dtype=bool)
    mask[2:5, 3:7] = True  # 12 pixels; row-major middle = index 6 = row 3, col 5
    assert fixed_click(mask) == ((5.0, 3.0), 1)
    rng = np.random.default_rng(0)
    for _ in range(20):
        (x, y), label = random_click(mask, rng)
        assert label == 1 and mask[int(y), int(x)]
    (x, y), label = fixed_click(np.zeros((4, 4), dtype=bool))
    assert label == 0  # nothing to click on: a background click, as the reference

    cine = phantom_loop(5, labelled="ends")
    clip = make_clip(cine, 4, 256)
    assert clip.frames.shape == (4, 3, 256, 256) and clip.masks.shape == (4, 256, 256)
    assert clip.frame_indices == [0, 3, 6, 9] and clip.labelled == [True, False, False, True]
    assert torch.equal(clip.frames[:, 0], clip.frames[:, 2])  # grey repeated to 3 channels
    assert 0 <= float(clip.frames.min()) and float(clip.frames.max()) <= 255
    assert set(torch.unique(clip.masks).tolist()) <= {0.0, 1.0} and clip.masks[1:3].sum() == 0
    x, y = clip.point_xy
    assert clip.point_label == 1 and clip.masks[0, int(y), int(x)] == 1
    # the 128 px truth doubled by nearest-neighbour resizing
    expected = np.kron(cine.labels[9].astype(np.float32), np.ones((2, 2), dtype=np.float32))
    assert np.array_equal(clip.masks[3].numpy(), expected)
    augmented = make_clip(cine, 4, 256, rng=np.random.default_rng(1), augment=True)
    assert augmented.frames.shape == clip.frames.shape and augmented.masks[0].sum() > 0


def test_loss_and_dice():
    target = torch.zeros(2, 16, 16)
    target[:, 4:12, 4:12] = 1
    perfect = memsam_loss(target * 40 - 20, target)
    wrong = memsam_loss(20 - target * 40, target)
    assert float(perfect) < 0.01 and float(wrong) > 0.9
    # 0.2 BCE (positive weight 2) + 0.8 soft Dice, checked by hand on a constant prediction
    logits = torch.zeros(2, 16, 16)
    p, positives, pixels = 0.5, float(target.sum()), target.numel()
    bce = (2 * positives * np.log(2) + (pixels - positives) * np.log(2)) / pixels
    dice = 1 - 2 * p * positives / (pixels * p * p + positives)
    assert float(memsam_loss(logits, target)) == pytest.approx(0.2 * bce + 0.8 * dice, rel=1e-4)
    half = target.clone()
    half[:, 4:8] = 0
    assert dice_score(half > 0, target > 0) == pytest.approx(2 * 64 / (64 + 128), rel=1e-6)  # 64 of 128 pixels found


def test_split_keeps_patients_together_and_follows_dataset_splits():
    loops = [dataclasses.replace(phantom_loop(s, frames=3, size=32), group=g)
             for s, g in zip(range(6), "aabbcd")]
    train, val = split_sources(loops, val_fraction=0.25)
    assert {s.group for s in val} == {"d"} and len(train) == 5  # the last 1 of 4 patients, sorted
    train, val = split_sources(loops, split={"train": ["a", "b"], "val": ["c"], "test": ["d"]})
    assert [s.group for s in train] == list("aabb") and [s.group for s in val] == ["c"]
    tagged = [dataclasses.replace(loop, split=split) for loop, split in zip(loops, ["train", "val", "test"] * 2)]
    train, val = split_sources(tagged)
    assert [s.split for s in train] == ["train", "train"] and [s.split for s in val] == ["val", "val"]


# --- readers -----------------------------------------------------------------------------------------
def _write_nifti(path: Path, array: np.ndarray, spacing=(0.3, 0.25, 1.0)) -> None:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array)  # (T, H, W) -> size (W, H, T)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))


def test_camus_layout(tmp_path):
    rng = np.random.default_rng(0)
    for patient, ed, es in (("patient0001", 1, 5), ("patient0002", 6, 1)):
        folder = tmp_path / "database_nifti" / patient
        folder.mkdir(parents=True)
        for view in ("2CH", "4CH"):
            frames = rng.integers(0, 256, (5, 12, 16)).astype(np.uint8)
            truth = np.zeros((5, 12, 16), dtype=np.uint8)
            for t in range(5):
                truth[t, 2:8 - t // 2, 3:9] = 1  # LV cavity
                truth[t, 9:11, 3:9] = 2  # myocardium: discarded
                truth[t, 0, :] = 3  # atrium: discarded
            _write_nifti(folder / f"{patient}_{view}_half_sequence.nii.gz", frames)
            _write_nifti(folder / f"{patient}_{view}_half_sequence_gt.nii.gz", truth)
            (folder / f"Info_{view}.cfg").write_text(f"ED: {ed}\nES: {es}\nNbFrame: 5\n")
        if patient == "patient0001":
            kept_frames, kept_truth = frames, truth
    assert detect_layout(tmp_path) == "camus"
    sources = read_dataset(tmp_path)
    assert [s.name for s in sources] == ["patient0001_2CH", "patient0001_4CH", "patient0002_2CH", "patient0002_4CH"]
    assert [s.group for s in sources] == ["patient0001"] * 2 + ["patient0002"] * 2
    cine = sources[1].load()
    assert np.array_equal(cine.frames, kept_frames)
    assert cine.labelled_frames == (0, 1, 2, 3, 4)
    assert np.array_equal(cine.labels[4], kept_truth[4] == 1)  # label 1 only
    assert cine.spacing == pytest.approx((0.25, 0.3))  # (row, column)
    reversed_cine = sources[3].load()  # Info says ED (6) after ES (1): loop reversed, ED first
    assert reversed_cine.labels[0].sum() < reversed_cine.labels[4].sum()
    semi = read_camus(tmp_path, ed_es_only=True)
    assert semi[0].labelled_frames == (0, 4) and semi[0].load().labelled_frames == (0, 4)

    bad = tmp_path / "database_nifti" / "patient0002" / "patient0002_4CH_half_sequence_gt.nii.gz"
    _write_nifti(bad, np.zeros((4, 12, 16), dtype=np.uint8))
    with pytest.raises(TrainingDataError, match="mismatched label frames"):
        read_camus(tmp_path)


def _sequence(frames: np.ndarray, spacing=(0.4, 0.5), colour=False) -> dict:
    """A Slicer volume sequence of single-slice frames, as slicerio holds it: voxels (I, J, 1[, T])."""
    import slicerio

    volumes = []
    for frame in frames:
        if colour:  # (H, W, 3) -> (3, I, J, 1)
            voxels = np.transpose(frame, (2, 1, 0))[..., np.newaxis]
        else:  # (H, W[, K]) -> (I, J, K)
            voxels = np.transpose(frame if frame.ndim == 3 else frame[..., np.newaxis], (1, 0, 2))
        volume = {"voxels": np.ascontiguousarray(voxels), "ijkToLPS": np.diag([-spacing[1], -spacing[0], 1.0, 1.0]),
                  "spaceDimension": 3}
        if colour:
            volume["component"] = {"kind": "RGB-color", "label": None, "unit": None}
        volumes.append(volume)
    return slicerio.create_sequence(volumes)


def test_slicer_layout_with_rgb_frames_and_unlabelled_frames(tmp_path):
    import slicerio

    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (6, 10, 14, 3)).astype(np.uint8)
    labels = np.zeros((6, 10, 14), dtype=np.uint8)
    labels[0, 2:6, 3:8] = 1
    labels[3, 3:6, 3:7] = 2  # another label value: still the target by default
    labels[5, 2:5, 4:8] = 1
    slicerio.write_volume(str(tmp_path / "loopA.seq.nrrd"), _sequence(rgb, colour=True))
    slicerio.write_volume(str(tmp_path / "loopA.labels.seq.nrrd"), _sequence(labels))
    assert detect_layout(tmp_path) == "slicer"
    (source,) = read_dataset(tmp_path)
    assert source.name == "loopA" and source.labelled_frames == (0, 3, 5)
    cine = source.load()
    luma = np.rint(rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)).astype(np.uint8)
    assert np.array_equal(cine.frames, luma)  # colour -> BT.601 luma
    assert np.array_equal(cine.labels[3], labels[3] > 0) and 1 not in cine.labels
    assert cine.spacing == pytest.approx((0.4, 0.5))
    (only_ones,) = read_slicer(tmp_path, label_value=1)
    assert only_ones.load().labels[3].sum() == 0  # labelled frame, but no pixel of label 1


def test_slicer_layout_errors(tmp_path):
    import slicerio

    def pair(name, frames, labels):
        folder = tmp_path / name
        folder.mkdir()
        slicerio.write_volume(str(folder / f"{name}.seq.nrrd"), _sequence(frames))
        if labels is not None:
            slicerio.write_volume(str(folder / f"{name}.labels.seq.nrrd"), _sequence(labels))
        return folder

    frames = np.zeros((4, 8, 8), dtype=np.uint8)
    frames[:, 2:5, 2:5] = 200
    labels = (frames > 0).astype(np.uint8)
    with pytest.raises(TrainingDataError, match="mismatched label frames: the loop has 4 frames, its labels 3"):
        read_slicer(pair("short", frames, labels[:3]))
    with pytest.raises(TrainingDataError, match="mismatched label frames"):
        read_slicer(pair("small", frames, labels[:, :6]))
    with pytest.raises(TrainingDataError, match="1 frame"):
        read_slicer(pair("single", frames[:1], labels[:1]))
    with pytest.raises(TrainingDataError, match="3D\\+t"):
        read_slicer(pair("volumes", np.full((4, 8, 8, 3), 7, dtype=np.uint8), labels))  # 8 x 8 x 3 per time point
    with pytest.raises(TrainingDataError, match="no label file"):
        read_slicer(pair("unlabelled", frames, None))
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrainingDataError, match="no training data in a known layout"):
        read_dataset(tmp_path / "empty")


def test_polygon_fill_counts_pixel_centres_inside_or_on_the_outline():
    square = polygon_mask(np.array([2, 2, 6, 6]), np.array([1, 5, 5, 1]), (9, 9))
    expected = np.zeros((9, 9), dtype=bool)
    expected[2:7, 1:6] = True  # boundary rows/columns included
    assert np.array_equal(square, expected)
    triangle = polygon_mask(np.array([0, 8, 8]), np.array([0, 0, 8]), (10, 10))
    rows, cols = np.mgrid[0:10, 0:10]
    assert np.array_equal(triangle, (cols <= rows) & (rows <= 8))  # below the diagonal, diagonal included
    clipped = polygon_mask(np.array([-5, -5, 3, 3]), np.array([-5, 20, 20, -5]), (6, 8))
    assert clipped[:4].all() and not clipped[4:].any()


def _echonet_trace(top: int, left: int, right: int) -> list:
    """21 rows: the long axis, then 20 chords of a rectangle rows top..top+19, columns left..right."""
    rows = [(left + right) / 2, top, (left + right) / 2, top + 19]
    return [rows] + [[left, top + k, right, top + k] for k in range(20)]


def _write_avi(path: Path, frames_rgb: np.ndarray) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=50)  # lossless, so decoded pixels are exact
        stream.width, stream.height, stream.pix_fmt = frames_rgb.shape[2], frames_rgb.shape[1], "bgr0"
        for frame in frames_rgb:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_echonet_layout(tmp_path, caplog):
    pytest.importorskip("av", reason="PyAV (pip install av) decodes the AVI videos")
    (tmp_path / "Videos").mkdir()
    rng = np.random.default_rng(2)
    videos = {"0XA": ("TRAIN", (3, 9)), "0XB": ("VAL", (7, 2)), "0XC": ("TEST", (1, 4)), "0XD": ("TRAIN", (2,))}
    rgb = {}
    for name in videos:
        rgb[name] = rng.integers(0, 256, (12, 40, 32, 3)).astype(np.uint8)
        _write_avi(tmp_path / "Videos" / f"{name}.avi", rgb[name])
    with open(tmp_path / "FileList.csv", "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["FileName", "EF", "ESV", "EDV", "FrameHeight", "FrameWidth", "FPS", "NumberOfFrames", "Split"])
        for name, (split, _) in videos.items():
            writer.writerow([name, 60.0, 20.0, 50.0, 40, 32, 50, 12, split])
        writer.writerow(["0XE", 60.0, 20.0, 50.0, 40, 32, 50, 12, "TRAIN"])  # no video file
    with open(tmp_path / "VolumeTracings.csv", "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["FileName", "X1", "Y1", "X2", "Y2", "Frame"])
        for name, (_, frames) in videos.items():
            for number, frame in enumerate(frames):
                for row in _echonet_trace(top=5 + number * 4, left=6, right=20):
                    writer.writerow([f"{name}.avi", *row, frame])
    assert detect_layout(tmp_path) == "echonet"
    with caplog.at_level("WARNING"):
        sources = read_echonet(tmp_path)
    assert [s.name for s in sources] == ["0XA", "0XB", "0XC"]
    assert "0XD" in caplog.text and "0XE" in caplog.text  # skipped, with the reason logged
    assert [s.split for s in sources] == ["train", "val", "test"]
    assert sources[1].labelled_frames == (2, 7)
    cine = sources[0].load()
    luma = np.rint(rgb["0XA"].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32))
    assert np.array_equal(cine.frames, luma.astype(np.uint8))
    expected = np.zeros((40, 32), dtype=bool)
    expected[5:25, 6:21] = True  # chords' rectangle, outline included
    assert np.array_equal(cine.labels[3], expected)
    assert np.array_equal(cine.labels[9], echonet_trace_to_mask(np.array(_echonet_trace(9, 6, 20)), (40, 32)))
    train, val = split_sources(sources)
    assert [s.name for s in train] == ["0XA"] and [s.name for s in val] == ["0XB"]  # TEST left out


def test_echonet_without_pyav_says_what_to_install(tmp_path, monkeypatch):
    import sys

    from MemSegLogic.training.datasets import read_avi

    monkeypatch.setitem(sys.modules, "av", None)  # makes `import av` fail
    with pytest.raises(TrainingDataError, match="pip install av"):
        read_avi(tmp_path / "any.avi")


def test_labelled_cine_checks_its_labels():
    frames = np.zeros((3, 6, 6), dtype=np.uint8)
    with pytest.raises(TrainingDataError, match="mismatched label frames"):
        LabelledCine("x", frames, {3: np.zeros((6, 6), bool)})
    with pytest.raises(TrainingDataError, match="mismatched label frames"):
        LabelledCine("x", frames, {0: np.zeros((5, 6), bool)})
    with pytest.raises(TrainingDataError, match="1 frame"):
        LabelledCine("x", frames[:1], {})
    with pytest.raises(TrainingDataError, match="uint8"):
        LabelledCine("x", frames.astype(np.float32), {})


def test_command_line_parser_and_bad_data(tmp_path):
    import argparse

    from MemSegLogic.training import add_train_memsam_parser, run_train_memsam

    parser = argparse.ArgumentParser()
    add_train_memsam_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train-memsam", str(tmp_path), "-o", str(tmp_path / "out"), "--full", "--epochs", "3",
                              "--lr", "2e-4", "--no-amp", "--layout", "slicer", "--clip-length", "6"])
    assert (args.semi, args.epochs, args.lr, args.no_amp, args.layout, args.clip_length) == (False, 3, 2e-4, True,
                                                                                           "slicer", 6)
    assert args.run is run_train_memsam and not args.resume
    assert parser.parse_args(["train-memsam", "d", "-o", "o"]).semi  # semi-supervised by default
    args.quiet = True
    with pytest.raises(TrainingDataError, match="no usable slicer loops"):
        run_train_memsam(args)


def test_initial_weights_from_a_sam_file_or_a_memsam_checkpoint(training_run, tmp_path):
    # A Meta-format SAM state dict for the tiny encoder: SAM's names only (no SAMUS adapters, CNN branch or
    # memory), global-attention rel-pos tables at SAM's 1024 px size (2 * 64 - 1 rows).
    donor = build_training_model(None, CONFIG, seed=7)
    samus_only = ("cnn_embed", "post_pos_embed", "Adapter")
    sam = {k: v.clone() for k, v in donor.state_dict().items()
           if not k.startswith("memory.") and not any(m in k for m in samus_only)}
    for block in CONFIG.global_attn_indexes:
        for axis in "hw":
            sam[f"image_encoder.blocks.{block}.attn.rel_pos_{axis}"] = torch.randn(127, 24)
    torch.save({"model": sam}, tmp_path / "sam_tiny.pth")
    model = build_training_model(tmp_path / "sam_tiny.pth", CONFIG, seed=0)
    random = build_training_model(None, CONFIG, seed=0)
    state = model.state_dict()
    assert torch.equal(state["mask_decoder.iou_token.weight"], sam["mask_decoder.iou_token.weight"])
    assert torch.equal(state["memory.key_proj.key_proj.weight"], random.state_dict()["memory.key_proj.key_proj.weight"])
    assert state[f"image_encoder.blocks.{CONFIG.global_attn_indexes[0]}.attn.rel_pos_h"].shape == (63, 24)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {n for n, _ in model.trainable_parameters()}

    trained = build_training_model(training_run["result"].best_checkpoint)  # a MemSAM checkpoint: fine-tune it
    for key, value in load_memsam(training_run["result"].best_checkpoint).state_dict().items():
        assert torch.equal(trained.state_dict()[key], value), key
    with pytest.raises(Exception, match="no such file, and not a registered checkpoint"):
        build_training_model(tmp_path / "missing.pth")

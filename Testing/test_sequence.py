"""`segment_sequence` over 2D+t cines without Slicer: MemSAM (real model code, tiny random
weights in the official layout) reproduces the reference per-clip algorithm from a prompt on
any frame, its memory cap, the zero-shot path with real LiteMedSAM weights on a phantom, and
the errors a user can cause. The MRML side is in test_mrml_sequence.py."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from MemSegLogic.cine import Cine, frame_prompt, segment_sequence
from MemSegLogic.core.prompt import Prompt
from MemSegLogic.errors import CheckpointError, InvalidPromptError, InvalidVolumeError, SegmentationCancelled
from MemSegLogic.models.memsam import load_memsam

CLICK = (118, 131)  # inside the phantom's ellipse on every frame


def _beating_ellipse(frames=5, height=256, width=256, seed=0) -> np.ndarray:
    """Integral grey frames 0..255: a bright ellipse shrinking over time on speckled background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    cy, cx = height * 130 / 256, width * 118 / 256
    out = []
    for t in range(frames):
        image = 40.0 + 30.0 * xx / width + rng.normal(0.0, 6.0, (height, width))
        inside = ((yy - cy) / (height * (50 - 4 * t) / 256)) ** 2 + ((xx - cx) / (width * (35 - 3 * t) / 256)) ** 2 <= 1
        image[inside] += 140.0
        out.append(np.clip(np.rint(image), 0, 255))
    return np.stack(out).astype(np.float32)


def _truth(frames):
    return frames > 150


@pytest.fixture(scope="module")
def phantom():
    return _beating_ellipse()


@pytest.fixture(scope="module")
def memsam(tiny_memsam_checkpoint):
    return load_memsam(tiny_memsam_checkpoint)


def _reference_probability(model, frames: np.ndarray, click) -> np.ndarray:
    """The reference algorithm (`forward_clip`, prompt on frame 0) on grey frames."""
    with torch.inference_mode():
        logits = model.forward_clip(torch.from_numpy(frames), click)
    return torch.sigmoid(logits[:, 0]).numpy()


def test_prompt_on_first_frame_is_the_reference_algorithm(phantom, memsam, tiny_memsam_checkpoint):
    result = segment_sequence(phantom, frame_prompt(0, positive=[CLICK]), model=tiny_memsam_checkpoint,
                              device="cpu")
    expected = _reference_probability(memsam, phantom, CLICK)
    np.testing.assert_allclose(result.probability, expected, atol=1e-5)
    assert result.masks.dtype == np.uint8 and result.masks.shape == phantom.shape
    np.testing.assert_array_equal(result.masks, (result.probability > 0.6).astype(np.uint8))
    assert result.threshold == 0.6 and not result.zero_shot and result.weights_verified
    assert result.prompt_frame == 0 and result.memory_frames == 16


def test_prompt_on_a_middle_frame_propagates_both_ways(phantom, memsam, tiny_memsam_checkpoint):
    middle = 2
    messages = []
    result = segment_sequence(phantom, frame_prompt(middle, positive=[CLICK]), model=tiny_memsam_checkpoint,
                              device="cpu", progress=lambda f, m: messages.append(m))
    forward = _reference_probability(memsam, phantom[middle:], CLICK)  # frames 2, 3, 4
    backward = _reference_probability(memsam, phantom[middle::-1].copy(), CLICK)  # frames 2, 1, 0
    np.testing.assert_allclose(result.probability[middle:], forward, atol=1e-5)
    np.testing.assert_allclose(result.probability[:middle + 1], backward[::-1], atol=1e-5)
    # every frame decoded once: 5 frames, the prompted one shared by both passes
    assert sum("frame " in m and " of 5 " in m for m in messages) == 5


def test_memory_cap_bounds_what_is_read(phantom, tiny_memsam_checkpoint, monkeypatch):
    from MemSegLogic.models.memsam import MemSAM

    read_sizes = []
    original = MemSAM.read_memory

    def recording(self, query_key, query_selection, keys, shrinkage, values):
        read_sizes.append(keys.shape[2])
        return original(self, query_key, query_selection, keys, shrinkage, values)

    monkeypatch.setattr(MemSAM, "read_memory", recording)
    uncapped = segment_sequence(phantom, frame_prompt(0, positive=[CLICK]), model=tiny_memsam_checkpoint,
                                device="cpu")
    assert read_sizes == [1, 1, 2, 3, 4]  # the reference: every earlier frame
    read_sizes.clear()
    capped = segment_sequence(phantom, frame_prompt(0, positive=[CLICK]), model=tiny_memsam_checkpoint,
                              device="cpu", memory_frames=2)
    assert read_sizes == [1, 1, 2, 2, 2]
    # identical while the cap is not reached, different once it is
    np.testing.assert_allclose(capped.probability[:3], uncapped.probability[:3], atol=1e-6)
    assert np.abs(capped.probability[3:] - uncapped.probability[3:]).max() > 1e-6


def test_colour_and_non_square_frames(tiny_memsam_checkpoint):
    grey = _beating_ellipse(frames=3, height=96, width=128)
    colour = np.repeat(grey[..., None], 3, axis=-1).astype(np.uint8)
    colour[..., 2] = np.clip(colour[..., 2].astype(int) + 1, 0, 255)  # not quite grey: luma must be used
    cine = Cine(colour, np.diag([-0.3, -0.3, 1.0, 1.0]), ("0", "0.033", "0.067"), "time", "s")
    prompt = frame_prompt(1, positive=[(55, 48)])
    result = segment_sequence(cine, prompt, model=tiny_memsam_checkpoint, device="cpu")
    assert result.masks.shape == (3, 96, 128)
    assert result.index_values == ("0", "0.033", "0.067") and result.index_name == "time"
    np.testing.assert_array_equal(result.ijk_to_ras, cine.ijk_to_ras)
    luma = segment_sequence(cine.gray(), prompt, model=tiny_memsam_checkpoint, device="cpu")
    np.testing.assert_allclose(result.probability, luma.probability, atol=1e-6)
    assert not np.allclose(cine.gray(), grey)  # the blue tweak reached the model input


def test_zero_shot_with_litemedsam_follows_the_phantom():
    """Real LiteMedSAM weights, prompted by a box on the middle frame: each frame's mask must
    match the ellipse (not trained on echo, but a high-contrast blob is within its reach)."""
    frames = _beating_ellipse(frames=5)
    truth = _truth(frames)
    rows, cols = np.nonzero(truth[2])
    box = (cols.min(), rows.min(), cols.max(), rows.max())
    result = segment_sequence(frames, frame_prompt(2, box=box), model="medsam-lite", device="cpu")
    assert result.zero_shot and result.model == "medsam-lite" and result.threshold == 0.5
    for t in range(len(frames)):
        dice = 2 * np.sum(result.masks[t] & truth[t]) / (result.masks[t].sum() + truth[t].sum())
        assert dice > 0.85, f"frame {t}: Dice {dice:.3f}"


def test_cancel_stops_before_any_result(phantom, tiny_memsam_checkpoint):
    cancel = threading.Event()

    def progress(fraction, message):
        if "frame 2 of" in message:
            cancel.set()

    with pytest.raises(SegmentationCancelled):
        segment_sequence(phantom, frame_prompt(0, positive=[CLICK]), model=tiny_memsam_checkpoint, device="cpu",
                         progress=progress, cancel=cancel)


@pytest.mark.parametrize("frames, message", [
    (np.zeros((0, 64, 64)), "empty"),
    (np.random.default_rng(0).random((1, 64, 64)), "one frame"),
    (np.random.default_rng(0).random((4, 6, 64, 64)), "3D\\+t"),
    (np.full((4, 64, 64), 7.0), "same value"),
    (np.where(np.eye(64)[None].repeat(3, 0) > 0, np.nan, 1.0), "NaN"),
])
def test_bad_cines_are_refused(frames, message):
    with pytest.raises(InvalidVolumeError, match=message):
        segment_sequence(frames, frame_prompt(0, positive=[(5, 5)]), model="medsam-lite")


def test_bad_prompts_are_refused(phantom):
    with pytest.raises(InvalidPromptError, match="outside"):
        segment_sequence(phantom, frame_prompt(7, positive=[CLICK]), model="medsam-lite")
    with pytest.raises(InvalidPromptError, match="outside"):
        segment_sequence(phantom, frame_prompt(0, positive=[(300, 10)]), model="medsam-lite")
    with pytest.raises(InvalidPromptError, match="one prompted frame"):
        segment_sequence(phantom, [frame_prompt(0, positive=[CLICK]), frame_prompt(3, positive=[CLICK])],
                         model="medsam-lite")
    with pytest.raises(InvalidPromptError, match="frame"):
        segment_sequence(phantom, Prompt.from_points([(3, 10, 10)], axis="I"), model="medsam-lite")
    with pytest.raises(InvalidPromptError, match="empty"):
        segment_sequence(phantom, [], model="medsam-lite")
    with pytest.raises(InvalidPromptError, match="only negative"):
        segment_sequence(phantom, frame_prompt(0, negative=[CLICK]), model="medsam-lite")


def test_memsam_weights_missing_corrupt_or_foreign(phantom, tiny_memsam_checkpoint, tmp_path):
    prompt = frame_prompt(0, positive=[CLICK])
    with pytest.raises(CheckpointError, match="No trained MemSAM weights have been published.*train-memsam"):
        segment_sequence(phantom, prompt)  # the weights folder has no memsam.pth
    corrupt = tmp_path / "memsam.pth"
    corrupt.write_bytes(tiny_memsam_checkpoint.read_bytes()[:-10] + b"0123456789")
    (tmp_path / "memsam.pth.sha256").write_text(
        tiny_memsam_checkpoint.with_name(tiny_memsam_checkpoint.name + ".sha256").read_text())
    with pytest.raises(CheckpointError, match="corrupt"):
        segment_sequence(phantom, prompt, model=corrupt)
    foreign = tmp_path / "other.pth"
    torch.save({"weight": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="not a loadable MemSAM checkpoint"):
        segment_sequence(phantom, prompt, model=foreign)
    with pytest.raises(CheckpointError, match="not MemSAM weights|sam checkpoint"):
        segment_sequence(phantom, prompt, model="sam-vit-b")


def test_cli_echo_writes_a_mask_sequence_on_the_cine_grid(tiny_memsam_checkpoint, tmp_path, capsys):
    from MemSegLogic.app.cli import main

    frames = _beating_ellipse(frames=3, height=120, width=100).astype(np.uint8)
    oblique = np.array([[0.0, -0.4, 0.1, 12.0], [-0.3, 0.0, 0.2, -7.0], [0.0, 0.1, -0.9, 3.5], [0, 0, 0, 1]])
    cine = Cine(frames, oblique, ("0", "0.04", "0.08"), "time", "s")
    source = tmp_path / "loop.seq.nrrd"
    cine.write(source)
    output = tmp_path / "lv.seq.nrrd"
    status = main(["-q", "echo", str(source), "--point", "46,61,1", "--model", str(tiny_memsam_checkpoint),
                   "-o", str(output)])
    assert status == 0
    written = Cine.read(output)
    expected = segment_sequence(cine, frame_prompt(1, positive=[(46, 61)]), model=tiny_memsam_checkpoint,
                                device="cpu")
    np.testing.assert_array_equal(written.frames, expected.masks)
    np.testing.assert_allclose(written.ijk_to_ras, oblique, atol=1e-9)
    assert written.index_values == ("0", "0.04", "0.08") and (written.index_name, written.index_unit) == ("time", "s")

    before = output.read_bytes()
    assert main(["echo", str(source), "--point", "46,61,0", "--point", "40,50,2", "-o", str(tmp_path / "b.seq.nrrd")]) == 2
    assert "frames [0, 2]" in capsys.readouterr().err
    assert main(["echo", str(source), "--point", "46,61,1", "-o", str(output)]) == 2  # it exists: not replaced
    assert "exists already" in capsys.readouterr().err and output.read_bytes() == before
    assert main(["echo", str(source), "--point", "46,61", "-o", str(tmp_path / "lv.nii.gz")]) == 2


def test_a_sam2_model_trained_on_echo_is_not_labelled_zero_shot(tiny_sam2_checkpoint):
    """The cine path runs SAM 2 models by propagation along time; one registered as trained on
    cine loops (as medsam2-us-heart is) is reported as such, the same weights otherwise not."""
    import dataclasses

    from MemSegLogic.runtime.checkpoints import register_checkpoint, unregister_checkpoint

    frames = _beating_ellipse(frames=3, height=64, width=64)
    echo = register_checkpoint(dataclasses.replace(tiny_sam2_checkpoint, name="test-sam2-echo", trained_on_cine=True))
    try:
        trained = segment_sequence(frames, frame_prompt(1, positive=[(30, 33)]), model=echo.name, device="cpu")
        other = segment_sequence(frames, frame_prompt(1, positive=[(30, 33)]), model=tiny_sam2_checkpoint.name,
                                 device="cpu")
    finally:
        unregister_checkpoint(echo.name)
    assert not trained.zero_shot and other.zero_shot
    np.testing.assert_array_equal(trained.masks, other.masks)  # the same propagation, only the label differs


def test_cine_model_list_offers_the_echo_trained_model_before_the_zero_shot_ones():
    from MemSegLogic.cine import cine_models

    models = cine_models()
    names = [name for name, _ in models]
    assert names[0] == "memsam"
    assert dict(models)["medsam2-us-heart"] == "trained on echo cine loops"
    assert dict(models)["medsam-lite"].startswith("zero-shot")
    assert names.index("medsam2-us-heart") < min(names.index(n) for n, how in models if how.startswith("zero-shot"))
    assert "sam-vit-b" not in names  # MemSAM's training start, not a segmenter

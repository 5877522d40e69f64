"""MemSeg's MedSAM-2 plumbing against stock SAM 2 on the same frames, prompt and weights.

Stock `SAM2VideoPredictor` reads a JPEG folder; MemSeg feeds slices from memory. Both get the
decoded JPEG pixels, so any difference would come from our state building or preprocessing.
The frames are 256 x 256 = the model size, so both resize steps are the identity. On CPU the
result is bit-identical (tolerance 0): the state and the preprocessing are the same operations.
"""

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("sam2")


def _phantom_frames(folder, count=6, size=256):
    """A bright disc that moves and shrinks over the frames, on noise; saved as JPEGs and read back."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:size, :size]
    for n in range(count):
        disc = (yy - 128) ** 2 + (xx - 110 - 6 * n) ** 2 < (44 - 4 * n) ** 2
        image = (50 + 40 * rng.random((size, size)) + 130 * disc).astype(np.uint8)
        Image.fromarray(image, mode="L").save(folder / f"{n:05d}.jpg", quality=95)
    return np.stack([np.asarray(Image.open(folder / f"{n:05d}.jpg").convert("L")) for n in range(count)])


def _propagate(predictor, state, seed_frame):
    predictor.add_new_points_or_box(state, seed_frame, 1, points=np.array([[128, 128]], np.float32),
                                    labels=np.array([1], np.int32), box=np.array([70, 84, 190, 172], np.float32))
    logits = {}
    for reverse in (False, True):
        for frame, _, masks in predictor.propagate_in_video(state, start_frame_idx=seed_frame, reverse=reverse):
            logits[frame] = masks[0, 0].float().numpy().copy()
    return logits


def test_same_masks_as_stock_sam2_video_predictor(tmp_path, tiny_sam2_checkpoint):
    import torch
    from sam2.build_sam import build_sam2_video_predictor

    from MemSegLogic.core.prompt import SlicePrompt
    from MemSegLogic.engines import load_engine
    from MemSegLogic.engines.medsam2 import sam2_overrides
    from MemSegLogic.progress import Monitor
    from MemSegLogic.runtime.checkpoints import ensure_checkpoint

    frames = _phantom_frames(tmp_path)
    seed = 2
    weights = ensure_checkpoint(tiny_sam2_checkpoint)
    stock = build_sam2_video_predictor(tiny_sam2_checkpoint.config, str(weights), device="cpu",
                                       hydra_overrides_extra=sam2_overrides(tiny_sam2_checkpoint.image_size))
    expected = _propagate(stock, stock.init_state(str(tmp_path)), seed)

    engine = load_engine(tiny_sam2_checkpoint.name, torch.device("cpu"))
    seeds = {seed: SlicePrompt(seed, np.array([[128.0, 128.0]]), np.array([1]), np.array([70.0, 84.0, 190.0, 172.0]))}
    # stock memory, no early stop: this is the foundation's one-axis path
    ours = engine.propagate(frames, seeds, Monitor(), absent_slices=0, memory=None)

    assert ours.visited.all()
    for frame, stock_logits in expected.items():
        np.testing.assert_array_equal(ours.logits[frame], stock_logits)
        np.testing.assert_array_equal(ours.logits[frame] > 0, stock_logits > 0)
    # The comparison means something only if the masks are neither empty nor full.
    foreground = np.mean([np.mean(expected[f] > 0) for f in expected])
    assert 0.01 < foreground < 0.99, foreground


def test_memseg_predictor_preprocessing_matches_stock_loader(tmp_path, tiny_sam2_checkpoint):
    """Frames of another size: our Pillow resize + normalisation equals sam2's JPEG loader."""
    from sam2.utils.misc import load_video_frames

    from MemSegLogic.engines.medsam2 import SliceFrames

    rng = np.random.default_rng(2)
    stack = rng.integers(0, 256, size=(3, 97, 143), dtype=np.uint8)
    for n, frame in enumerate(stack):
        Image.fromarray(frame, mode="L").save(tmp_path / f"{n:05d}.jpg", quality=90)
    decoded = np.stack([np.asarray(Image.open(tmp_path / f"{n:05d}.jpg").convert("L")) for n in range(3)])
    images, height, width = load_video_frames(str(tmp_path), image_size=256, offload_video_to_cpu=True)
    ours = SliceFrames(decoded, 256)
    assert (height, width) == decoded.shape[1:]
    for n in range(3):
        np.testing.assert_array_equal(ours[n].numpy(), images[n].numpy())


def test_early_stop_ends_a_direction_after_n_absent_slices(tmp_path, tiny_sam2_checkpoint):
    """SAM 2's own "no object" verdict drives the stop rule. The random model is made to say "no
    object" everywhere by lowering its object-score bias (restored afterwards): each direction
    then visits exactly ``absent_slices`` slices past the seed, and the visited ones match the
    full run."""
    import torch

    from MemSegLogic.core.prompt import SlicePrompt
    from MemSegLogic.engines import load_engine
    from MemSegLogic.progress import Monitor

    frames = _phantom_frames(tmp_path, count=9)
    engine = load_engine(tiny_sam2_checkpoint.name, torch.device("cpu"))
    seeds = {4: SlicePrompt(4, np.array([[128.0, 128.0]]), np.array([1]), np.array([70.0, 84.0, 190.0, 172.0]))}
    bias = engine.predictor.sam_mask_decoder.pred_obj_score_head.layers[2].bias
    present = engine.propagate(frames, seeds, Monitor(), absent_slices=2)
    assert present.visited.all()  # the object never vanishes: every slice is visited
    with torch.no_grad():
        bias -= 20.0
    try:
        full = engine.propagate(frames, seeds, Monitor(), absent_slices=0)
        stopped = engine.propagate(frames, seeds, Monitor(), absent_slices=2)
    finally:
        with torch.no_grad():
            bias += 20.0
    assert np.flatnonzero(stopped.visited).tolist() == [2, 3, 4, 5, 6]
    for frame in (2, 3, 4, 5, 6):
        np.testing.assert_array_equal(stopped.logits[frame], full.logits[frame])
    assert (full.logits[[0, 1, 7, 8]] < 0).all()

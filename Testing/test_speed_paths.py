"""The speed machinery keeps results: batched encoding ahead of the memory loop, the automatic
smaller batch when memory runs out, bf16 autocast (run here with CPU autocast, the same mixed
dtypes CUDA sees), a lower input size and thread settings. Real sam2 / MemSAM code with tiny
random weights. Timing itself is measured by Testing/benchmarks/speed.py, never asserted here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("sam2")

from MemSegLogic import Prompt, SpeedOptions, Volume, segment_volume
from MemSegLogic.core.prompt import SlicePrompt
from MemSegLogic.engines import clear_engine_cache, load_engine
from MemSegLogic.errors import DeviceError
from MemSegLogic.progress import Monitor
from MemSegLogic.runtime.devices import run_shrinking_batch, set_cpu_threads

SEED = 3
BOX = np.array([70.0, 84.0, 190.0, 172.0])


def _moving_disc(count=9, size=256):
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:size, :size]
    frames = []
    for n in range(count):
        disc = (yy - 128) ** 2 + (xx - 110 - 4 * n) ** 2 < (44 - 2 * n) ** 2
        frames.append((50 + 40 * rng.random((size, size)) + 130 * disc).astype(np.uint8))
    return np.stack(frames)


def _seeds():
    return {SEED: SlicePrompt(SEED, np.array([[128.0, 128.0]]), np.array([1]), BOX)}


@pytest.fixture
def engine_with_batch(tiny_sam2_checkpoint):
    def make(encode_batch):
        return load_engine(tiny_sam2_checkpoint.name, torch.device("cpu"), encode_batch=encode_batch)

    yield make
    clear_engine_cache()


def _run(engine, frames, absent_slices=0, messages=None):
    before = engine.slices_encoded
    monitor = Monitor(None if messages is None else lambda fraction, message: messages.append(message))
    result = engine.propagate(frames, _seeds(), monitor, absent_slices=absent_slices)
    return result, engine.slices_encoded - before


def test_batched_encoding_gives_the_one_at_a_time_result(engine_with_batch):
    frames = _moving_disc()
    single, single_count = _run(engine_with_batch(1), frames)
    batched, batched_count = _run(engine_with_batch(4), frames)
    assert single.visited.all() and batched.visited.all()
    # Every slice once: the seed when prompted, the others in batches in the direction of travel.
    assert single_count == batched_count == len(frames)
    # A batched convolution may round differently in the last bits, nothing more.
    np.testing.assert_allclose(batched.logits, single.logits, atol=2e-3)
    agree = np.mean((batched.logits > 0) == (single.logits > 0))
    assert agree > 0.999, agree
    assert 0.01 < np.mean(single.logits > 0) < 0.99


def test_encoding_ahead_costs_at_most_a_batch_past_an_early_stop(engine_with_batch):
    """The model says "no object" everywhere (object-score bias lowered), so each direction stops
    after 2 slices past the seed; frames encoded ahead of the stop are counted, never shown."""
    frames = _moving_disc(count=16)
    engine = engine_with_batch(4)
    bias = engine.predictor.sam_mask_decoder.pred_obj_score_head.layers[2].bias
    with torch.no_grad():
        bias -= 20.0
    try:
        result, encoded = _run(engine, frames, absent_slices=2)
    finally:
        with torch.no_grad():
            bias += 20.0
    assert np.flatnonzero(result.visited).tolist() == [1, 2, 3, 4, 5]
    # seed + one batch of 4 forward (4..7) + one backward (2, 1, 0: the stack's start)
    assert encoded == 1 + 4 + 3


def test_out_of_memory_halves_the_batch_and_says_so(engine_with_batch):
    """Simulated GPU shortage (a stand-in for CUDA's allocator, which this CPU machine lacks): the
    real encoder refuses batches above 2 slices with PyTorch's out-of-memory error."""
    frames = _moving_disc()
    reference, _ = _run(engine_with_batch(1), frames)
    engine = engine_with_batch(8)
    predictor = engine.predictor
    encode = predictor.forward_image
    refused = []

    def short_of_memory(images):
        if len(images) > 2:
            refused.append(len(images))
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return encode(images)

    predictor.forward_image = short_of_memory
    messages = []
    try:
        result, encoded = _run(engine, frames, messages=messages)
    finally:
        del predictor.forward_image
    # the first forward batch: the 5 frames left after the seed, then 4, then 2 fit and stay
    assert refused == [5, 4]
    assert predictor.encode_batch == 2
    assert any("memory is short: encoding 4 slices at a time" in m for m in messages)
    assert any("memory is short: encoding 2 slices at a time" in m for m in messages)
    assert encoded == len(frames)
    np.testing.assert_allclose(result.logits, reference.logits, atol=2e-3)


def test_out_of_memory_with_one_slice_is_a_clear_error():
    calls = []

    def never_fits(batch):
        calls.append(batch)
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(DeviceError, match="ran out of memory.*crop the volume"):
        run_shrinking_batch(never_fits, 4, torch.device("cuda"))
    assert calls == [4, 2, 1]
    with pytest.raises(ValueError, match="other"):  # anything else is not retried
        run_shrinking_batch(lambda batch: (_ for _ in ()).throw(ValueError("other")), 4, torch.device("cpu"))


def test_padding_for_a_compiled_encoder_keeps_one_batch_shape(engine_with_batch):
    """A compiled encoder (dynamic=False) would recompile for each new batch size, so its
    batches are padded to one shape; padded frames are not counted nor used."""
    frames = _moving_disc(count=7)
    reference, _ = _run(engine_with_batch(1), frames)
    engine = engine_with_batch(4)
    shapes = []
    encode = engine.predictor.forward_image

    def recording(images):
        shapes.append(tuple(images.shape))
        return encode(images)

    engine.predictor.forward_image, engine.predictor.compiled = recording, True
    try:
        result, encoded = _run(engine, frames)
    finally:
        del engine.predictor.forward_image
        engine.predictor.compiled = False
    assert set(shapes) == {(4, 3, 256, 256)}
    assert encoded == len(frames)
    np.testing.assert_allclose(result.logits, reference.logits, atol=2e-3)


def test_medsam2_under_bf16_autocast_runs_and_agrees(engine_with_batch):
    """The CUDA path's precision (bf16 autocast, bf16 memories mixed with float32 state), run
    with CPU autocast: same code, same dtype mixing."""
    frames = _moving_disc(count=5)
    engine = engine_with_batch(2)
    full, _ = _run(engine, frames)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half, _ = _run(engine, frames)
    assert half.visited.all() and np.isfinite(half.logits).all()
    agree = np.mean((half.logits > 0) == (full.logits > 0))
    assert agree > 0.95, agree


def test_memsam_under_bf16_autocast_and_short_of_memory(tiny_memsam_checkpoint):
    from MemSegLogic.engines.memsam import load_memsam_engine

    engine = load_memsam_engine(tiny_memsam_checkpoint, device="cpu")
    frames = _moving_disc(count=5, size=128).astype(np.float32)
    seed = SlicePrompt(0, np.array([[60.0, 64.0]]), np.array([1]), None)
    before = engine.slices_encoded
    full = engine.segment(frames, seed)
    assert engine.slices_encoded - before == len(frames)
    assert load_memsam_engine(tiny_memsam_checkpoint, device="cpu") is engine  # kept between clicks

    # Simulated shortage (stand-in for CUDA's allocator): the real encoder refuses > 2 frames.
    encode, refused = engine.model.encode_frames, []

    def short_of_memory(images, **options):
        if images.shape[1] > 2:
            refused.append(images.shape[1])
            raise torch.OutOfMemoryError("CUDA out of memory")
        return encode(images, **options)

    engine.model.encode_frames = short_of_memory
    try:
        shrunk = engine.segment(frames, seed)
    finally:
        del engine.model.encode_frames
    assert refused == [5, 4] and engine.encode_batch == 2  # all 5 frames, then 4, then 2 at a time
    np.testing.assert_allclose(shrunk, full, atol=1e-4)

    # bf16 on a CPU without bf16 units is slow (~20 s a frame here): two frames, one memory read.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = engine.segment(frames[:2], seed)
    assert half.dtype == np.float32 and np.isfinite(half).all()
    agree = np.mean((half > 0) == (full[:2] > 0))
    assert agree > 0.9, agree


def test_lower_input_size_and_threads(tiny_sam2_checkpoint):
    rng = np.random.default_rng(0)
    zz, yy, xx = np.mgrid[:12, :64, :64]
    array = (40 * rng.random((12, 64, 64)) + 150 * (((yy - 32) ** 2 + (xx - 30) ** 2) < 14 ** 2)).astype(np.float32)
    volume = Volume(array, np.diag([0.8, 0.8, 2.0, 1.0]))
    prompt = Prompt.from_box((16, 18, 6), (44, 46, 6))
    threads = torch.get_num_threads()
    try:
        result = segment_volume(volume, prompt, model=tiny_sam2_checkpoint.name, axes=1, device="cpu",
                                speed=SpeedOptions(input_size=128, threads=1))
        assert torch.get_num_threads() == 1
    finally:
        set_cpu_threads(threads)
    assert result.input_size == 128
    assert result.slices_encoded >= result.slices_visited > 0
    with pytest.raises(ValueError, match="multiple of 16"):
        segment_volume(volume, prompt, model=tiny_sam2_checkpoint.name, axes=1, device="cpu",
                       speed=SpeedOptions(input_size=200))
    with pytest.raises(ValueError, match="own 256 px only"):
        segment_volume(volume, prompt, model="medsam-lite", axes=1, device="cpu",
                       speed=SpeedOptions(input_size=512))
    with pytest.raises(ValueError, match="positive"):
        set_cpu_threads(-2)

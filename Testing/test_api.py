"""segment_volume end to end with the real sam2 model code (tiny random weights): output
shape and geometry, progress, cancel, and every bad input rejected before any work."""

import threading

import numpy as np
import pytest
from geometry_cases import GEOMETRIES

from MemSegLogic import (
    CheckpointError,
    InvalidPromptError,
    InvalidVolumeError,
    Prompt,
    PropagationOptions,
    SegmentationCancelled,
    Volume,
    segment_volume,
)

pytest.importorskip("sam2")


def _ball_volume(geometry="k-flipped", shape=(8, 48, 40)):
    k, j, i = np.indices(shape)
    ball = ((k - 4) / 3.0) ** 2 + ((j - 24) / 12.0) ** 2 + ((i - 20) / 10.0) ** 2 < 1
    rng = np.random.default_rng(0)
    return Volume((rng.normal(0, 20, shape) + 300 * ball).astype(np.float32), GEOMETRIES[geometry])


def test_segment_volume_with_sam2_engine_keeps_grid_and_input(tiny_sam2_checkpoint, tmp_path):
    volume = _ball_volume()
    path = tmp_path / "ball.nrrd"
    volume.write(path)
    original = volume.array.copy()
    prompt = Prompt.from_points([[20, 24, 4]], box=[[10, 12, 4], [30, 36, 4]])
    calls = []
    result = segment_volume(path, prompt, model=tiny_sam2_checkpoint.name, device="cpu", axes=1,
                            propagation=PropagationOptions(absent_slices=0),
                            progress=lambda fraction, message: calls.append(fraction))
    assert result.mask.shape == volume.shape_kji and result.mask.dtype == np.uint8
    assert result.probability.shape == volume.shape_kji and result.probability.dtype == np.float32
    assert set(np.unique(result.mask)) <= {0, 1}
    np.testing.assert_array_equal(result.mask, (result.probability > 0.5).astype(np.uint8))
    np.testing.assert_allclose(result.ijk_to_ras, volume.ijk_to_ras, atol=1e-9)
    assert result.slices_visited == volume.shape_kji[0] and result.visited_per_axis == {"K": volume.shape_kji[0]}
    assert calls == sorted(calls) and calls[-1] == 1.0 and len(calls) > volume.shape_kji[0]
    np.testing.assert_array_equal(volume.array, original)


@pytest.mark.parametrize("axis", ["I", "J"])
def test_other_axes_map_back_to_kji(tiny_sam2_checkpoint, axis):
    """A pass along I or J visits every slice of that axis and returns a KJI mask."""
    volume = _ball_volume(geometry="permuted")
    point = {"I": [[20, 24, 4]], "J": [[20, 24, 4]]}[axis]
    result = segment_volume(volume, Prompt.from_points(point, axis=axis), model=tiny_sam2_checkpoint.name,
                            device="cpu", axes=1, propagation=PropagationOptions(absent_slices=0))
    assert result.mask.shape == volume.shape_kji
    assert result.slices_visited == volume.shape_ijk["IJK".index(axis)]


@pytest.mark.parametrize("memory, fusion", [("self-sorting", "weighted"), ("sam2", "vote")])
def test_six_orientations_end_to_end(tiny_sam2_checkpoint, memory, fusion):
    """axes=3 (the default) with the real sam2 model code: the seed axis, then I and J from the
    planes through the seed; per-axis probabilities kept; the mask is their fusion."""
    volume = _ball_volume(geometry="oblique", shape=(8, 30, 26))
    result = segment_volume(volume, Prompt.from_points([[13, 15, 4]], box=[[6, 6, 4], [20, 24, 4]]),
                            model=tiny_sam2_checkpoint.name, device="cpu",
                            propagation=PropagationOptions(memory=memory, fusion=fusion,
                                                           shared_memory=memory == "self-sorting"))
    assert result.axes == 3 and result.memory == memory and result.fusion == fusion
    assert result.mask.shape == volume.shape_kji and result.mask.dtype == np.uint8
    assert list(result.axis_probability) == ["K", "I", "J"]
    assert set(result.visited_per_axis) == {"K", "I", "J"}
    assert result.slices_visited == sum(result.visited_per_axis.values())
    for name, probability in result.axis_probability.items():
        assert probability.shape == volume.shape_kji
        covered = ~np.isnan(probability)
        assert covered.any()
        # whole slices of the axis are covered or not (a window may crop them in-plane)
        slices = np.moveaxis(covered, 2 - "IJK".index(name), 0).reshape(covered.shape[2 - "IJK".index(name)], -1)
        assert int(slices.any(axis=1).sum()) == result.visited_per_axis[name]
    probability, mask = result.fused(fusion)
    np.testing.assert_array_equal(result.mask, mask)
    np.testing.assert_array_equal(result.probability, probability)


def test_cancel_stops_promptly_and_raises(tiny_sam2_checkpoint):
    volume = _ball_volume()
    cancel = threading.Event()
    seen = []

    def progress(fraction, message):
        seen.append(message)
        if "slice" in message and "seed" not in message:
            cancel.set()  # cancel as soon as the first propagated slice is done

    with pytest.raises(SegmentationCancelled):
        segment_volume(volume, Prompt.from_points([[20, 24, 4]]), model=tiny_sam2_checkpoint.name, device="cpu",
                       progress=progress, cancel=cancel)
    assert sum("forward" in m or "backward" in m for m in seen) == 1


@pytest.mark.parametrize("volume, prompts, error, message", [
    (Volume(np.zeros((1, 16, 16), np.float32) + np.eye(16)), Prompt.from_points([[3, 3, 0]]), InvalidVolumeError, "2D"),
    (Volume(np.zeros((4, 16, 16, 3), np.uint8)), Prompt.from_points([[3, 3, 0]]), InvalidVolumeError, "RGB"),
    (Volume(np.where(np.eye(16)[None].repeat(4, 0) > 0, np.nan, 1.0)), Prompt.from_points([[3, 3, 0]]),
     InvalidVolumeError, "NaN"),
    (_ball_volume(), [], InvalidPromptError, "empty prompt"),
    (_ball_volume(), Prompt.from_points([[200, 3, 2]]), InvalidPromptError, "outside the volume"),
    (_ball_volume(), [Prompt.from_points([[3, 3, 2]], axis="K"), Prompt.from_points([[3, 3, 2]], axis="J")],
     InvalidPromptError, "different axes"),
    (_ball_volume(), [Prompt.from_points([[3, 3, 2]]), Prompt.from_points([[5, 3, 2]])], InvalidPromptError,
     "two prompts on slice K=2"),
])
def test_bad_input_fails_before_any_work(volume, prompts, error, message):
    with pytest.raises(error, match=message):
        segment_volume(volume, prompts, model="no-such-model-is-never-reached")


def test_unknown_model_and_unsupported_axes():
    volume = _ball_volume()
    with pytest.raises(CheckpointError, match="unknown model"):
        segment_volume(volume, Prompt.from_points([[20, 24, 4]]), model="sam3")
    with pytest.raises(ValueError, match="axes must be 1"):
        segment_volume(volume, Prompt.from_points([[20, 24, 4]]), model="medsam-lite", axes=2)
    with pytest.raises(ValueError, match="fusion must be one of"):
        segment_volume(volume, Prompt.from_points([[20, 24, 4]]), model="medsam-lite",
                       propagation=PropagationOptions(fusion="max"))
    with pytest.raises(ValueError, match="memory must be one of"):
        segment_volume(volume, Prompt.from_points([[20, 24, 4]]), model="medsam-lite",
                       propagation=PropagationOptions(memory="xmem"))

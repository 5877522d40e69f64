"""Prompts (validation, RAS constructors, slice frames) and intensity presets."""

import numpy as np
import pytest
from geometry_cases import GEOMETRIES

from MemSegLogic import InvalidPromptError, Prompt, Volume, to_uint8
from MemSegLogic.core.geometry import slice_stack, unstack


@pytest.fixture
def volume():
    return Volume(np.arange(6 * 10 * 12, dtype=np.int16).reshape(6, 10, 12), GEOMETRIES["oblique"])


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slice_frames_put_ijk_points_on_the_right_pixel(volume, axis):
    ijk = np.array([7, 4, 2])
    frames = slice_stack(volume.array, axis)
    prompt = Prompt.from_points([ijk], axis=axis)
    seed = prompt.to_slice_prompt()
    x, y = seed.points_xy[0].astype(int)
    assert frames[seed.frame_index][y, x] == volume.array[ijk[2], ijk[1], ijk[0]]
    np.testing.assert_array_equal(unstack(frames, axis), volume.array)


def test_ras_constructor_and_box_axis(volume):
    corners_ijk = np.array([[2, 3, 4], [9, 8, 4]])
    prompt = Prompt.from_ras(volume, box=volume.ijk_to_ras_points(corners_ijk + 0.2))
    assert (prompt.axis, prompt.slice_index) == (2, 4)
    np.testing.assert_array_equal(prompt.to_slice_prompt().box_xyxy, [2, 3, 9, 8])
    prompt.check(volume)
    with_points = Prompt.from_ras(volume, positive=volume.ijk_to_ras_points([[5, 5, 3]]),
                                  negative=volume.ijk_to_ras_points([[6, 2, 3]]), axis="K")
    np.testing.assert_array_equal(with_points.labels, [1, 0])
    with_points.check(volume)


@pytest.mark.parametrize("make, message", [
    (lambda v: Prompt.from_points([]), "empty prompt"),
    (lambda v: Prompt.from_points(negative=[[3, 3, 2]]), "only negative"),
    (lambda v: Prompt.from_points([[30, 3, 2]]), "outside the volume"),
    (lambda v: Prompt.from_points([[3, 3, -1]]), "outside the volume"),
    (lambda v: Prompt.from_points([[3, 3, 1], [3, 3, 4]]), "different K slices"),
    (lambda v: Prompt.from_box([2, 3, 4], [2, 8, 4]), "the box is a line"),
    (lambda v: Prompt.from_points(axis="K", box=[[2, 3, 4], [2, 8, 4]]), "zero size"),
    (lambda v: Prompt.from_box([2, 3, 4], [9, 8, 4.0 + 20]), "they differ along all of I, J and K"),
    (lambda v: Prompt.from_mask(np.ones((5, 5)), "K", 2), "shape"),
    (lambda v: Prompt.from_mask(np.zeros((10, 12)), "K", 2), "empty prompt"),
    (lambda v: Prompt.from_mask(np.ones((10, 12)), "K", 9), "outside the volume"),
    (lambda v: Prompt.from_points([[1, 2]]), "3 coordinates"),
    (lambda v: Prompt.from_points([[1, np.nan, 2]]), "NaN"),
])
def test_bad_prompts_raise_specific_errors(volume, make, message):
    with pytest.raises(InvalidPromptError, match=message):
        make(volume).check(volume)


def test_presets_window_a_copy():
    hounsfield = np.array([-2000, -1000, -600, 40, 400, 3000], dtype=np.int16)
    original = hounsfield.copy()
    lung = to_uint8(hounsfield, "ct-lung")  # W1500/L-600: [-1350, 150]
    np.testing.assert_array_equal(lung, [0, 60, 128, 236, 255, 255])
    abdomen = to_uint8(hounsfield, "ct-abdomen")  # [-160, 240]
    np.testing.assert_array_equal(abdomen, [0, 0, 0, 128, 255, 255])
    np.testing.assert_array_equal(hounsfield, original)
    assert to_uint8(hounsfield, "ct-bone").dtype == np.uint8


def test_mr_percentile_clipping():
    values = np.linspace(0, 1000, 10001)
    out = to_uint8(values, "mr")
    assert out[0] == 0 and out[-1] == 255
    low, high = np.percentile(values, [0.5, 99.5])
    assert out[np.searchsorted(values, low) - 1] == 0 and out[np.searchsorted(values, high) + 1] == 255
    with pytest.raises(ValueError, match="unknown intensity preset"):
        to_uint8(values, "ct-liver")


def test_points_on_several_slices_become_several_seeds():
    volume = Volume(np.zeros((12, 20, 16), np.float32), GEOMETRIES["oblique"])
    ijk = np.array([[3.0, 4.0, 2.0], [5.0, 6.0, 2.0], [7.0, 8.0, 9.0]])
    negative = np.array([[9.0, 9.0, 9.0]])
    prompts = Prompt.several_from_ras(volume, positive=volume.ijk_to_ras_points(ijk),
                                      negative=volume.ijk_to_ras_points(negative))
    assert [(p.axis, p.slice_index) for p in prompts] == [(2, 2), (2, 9)]
    np.testing.assert_allclose(prompts[0].points, ijk[:2], atol=1e-6)
    assert prompts[1].labels.tolist() == [1, 0]
    box = volume.ijk_to_ras_points(np.array([[2.0, 3.0, 5.0], [8.0, 3.0, 11.0]]))  # a J slice box
    on_j = Prompt.several_from_ras(volume, positive=volume.ijk_to_ras_points([[4.0, 7.0, 6.0]]), box=box)
    assert [(p.axis, p.slice_index, p.box is not None) for p in on_j] == [(1, 3, True), (1, 7, False)]
    with pytest.raises(InvalidPromptError, match="empty prompt"):
        Prompt.several_from_ras(volume)

"""The region grown from a click (`core.region`): the box a box-trained model is offered besides
the squares around the click. Real CT and MR slices, windowed by the preset as the engine gets them."""

import numpy as np
import pytest

from MemSegLogic.app.demo import deepest_point, middle_slice
from MemSegLogic.app.samples import load_pyradiomics_case
from MemSegLogic.core.intensity import to_uint8
from MemSegLogic.core.region import grown_region_box


def _click_and_box(image, reference):
    """The frame, the click at the reference's deepest point on its middle slice, and its box."""
    k = middle_slice(reference)
    column, row = deepest_point(reference[k] > 0)
    rows, cols = np.nonzero(reference[k])
    return image[k], np.array([[column, row]], dtype=np.float64), np.array([cols.min(), rows.min(), cols.max(), rows.max()])


def _box_iou(a, b):
    inner = np.maximum(0, np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]) + 1).prod()
    area = lambda box: (box[2:] - box[:2] + 1).prod()
    return inner / (area(a) + area(b) - inner)


def test_an_elongated_object_clicked_off_centre_gets_its_own_box():
    """What no square around the click gives: a bright bar 60 x 12 px on a noisy background,
    clicked near its left end."""
    generator = np.random.default_rng(0)
    frame = np.clip(generator.normal(60, 8, (128, 128)), 0, 255)
    frame[50:62, 20:80] = np.clip(generator.normal(190, 8, (12, 60)), 0, 255)
    box = grown_region_box(frame.astype(np.uint8), np.array([[25.0, 55.0]]))
    np.testing.assert_allclose(box, [20, 50, 79, 61], atol=1)


@pytest.mark.parametrize("lung", ["left lung", "right lung"])
def test_a_click_in_a_lung_grows_to_that_lung(chest_ct, lung):
    """Measured box IoU with the reference's box on the middle slice: 0.78 (left), 0.88 (right)."""
    volume, segments = chest_ct
    frame, click, reference_box = _click_and_box(to_uint8(volume.array, "ct-chest"), segments[lung])
    box = grown_region_box(frame, click)
    assert box is not None and _box_iou(box, reference_box) >= 0.7


@pytest.mark.parametrize("case", ["brain1", "brain2", "breast1"])
def test_a_region_that_leaks_over_the_organ_is_no_candidate(pyradiomics_data, case, monkeypatch):
    """A click in these MR lesions grows over the brain or breast (more than a quarter of the slice):
    no box is offered from it, and the squares around the click decide."""
    from MemSegLogic.core import region

    volume, reference = load_pyradiomics_case(pyradiomics_data, case)
    frame, click, reference_box = _click_and_box(to_uint8(volume.array, "mr"), reference)
    assert grown_region_box(frame, click) is None
    # the limit, not a failure to grow: without it, a box far larger than the lesion's
    monkeypatch.setattr(region, "MAX_REGION_FRACTION", 1.0)
    leaked = grown_region_box(frame, click)
    assert leaked is not None and _box_iou(leaked, reference_box) < 0.2


def test_a_click_on_the_frame_edge_or_outside_the_image_range_is_clamped():
    frame = np.zeros((32, 48), np.uint8)
    frame[:10, :10] = 200
    box = grown_region_box(frame, np.array([[-3.0, 0.4]]))
    np.testing.assert_allclose(box, [0, 0, 9, 9])

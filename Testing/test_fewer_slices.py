"""axes=3 with the other axes visiting every k-th slice (`PropagationOptions.other_axes_step`):
which slices each pass sees, that the fusion fills the slices between, and the option's checks.
Real LiteMedSAM weights on a phantom sphere (the real-CT figures: README "Speed")."""

from __future__ import annotations

import numpy as np
import pytest

from MemSegLogic import Prompt, PropagationOptions, Volume, segment_volume
from MemSegLogic.core.geometry import AXIS_NAMES, slice_stack
from MemSegLogic.core.metrics import dice

SEED_K = 12


@pytest.fixture(scope="module")
def sphere():
    """A bright sphere (radius 7 voxels) in a 24 x 40 x 40 KJI volume of 1 mm voxels."""
    k, j, i = np.mgrid[0:24, 0:40, 0:40]
    inside = (k - 12) ** 2 + (j - 20) ** 2 + (i - 19) ** 2 <= 49
    rng = np.random.default_rng(0)
    array = np.where(inside, 400, 0).astype(np.int16) + rng.normal(0, 10, inside.shape).astype(np.int16)
    return Volume(array, np.eye(4)), inside


@pytest.fixture(scope="module")
def every_other(sphere):
    """The sphere segmented with the other axes on every 2nd slice, its slice updates kept."""
    volume, inside = sphere
    rows, cols = np.nonzero(inside[SEED_K])
    updates = []
    result = segment_volume(volume, Prompt.from_box((cols.min(), rows.min(), SEED_K), (cols.max(), rows.max(), SEED_K)),
                            model="medsam-lite", axes=3, device="cpu", preview=updates.append,
                            propagation=PropagationOptions(other_axes_step=2))
    return result, updates


def test_other_axes_visit_every_kth_slice_from_their_plane(every_other):
    result, updates = every_other
    assert set(result.axis_probability) == {"K", "I", "J"} and not result.skipped_axes
    for name in ("I", "J"):
        axis = AXIS_NAMES.index(name)
        looked = np.flatnonzero(~np.isnan(slice_stack(result.axis_probability[name], axis)).all(axis=(1, 2)))
        seen = sorted({u.index for u in updates if u.axis == axis})
        assert list(looked) == seen and len(seen) == result.visited_per_axis[name] >= 3
        # every 2nd slice counted from the seed plane: one parity, no gap wider than the step
        assert len({index % 2 for index in seen}) == 1 and set(np.diff(seen)) == {2}
    k_looked = ~np.isnan(slice_stack(result.axis_probability["K"], 2)).all(axis=(1, 2))
    assert np.all(np.diff(np.flatnonzero(k_looked)) == 1)  # the seed axis still visits every slice


def test_fusion_fills_the_slices_between(every_other, sphere):
    """The slices an other axis skipped are as good as those it visited (LiteMedSAM on this small
    noisy sphere: Dice ~0.8 on its large cross-sections)."""
    result, _ = every_other
    _, inside = sphere
    assert dice(result.mask, inside) >= 0.7
    scores = {"skipped": [], "visited": []}
    for axis in (0, 1):
        probability = slice_stack(result.axis_probability[AXIS_NAMES[axis]], axis)
        for s in range(probability.shape[0]):
            if slice_stack(inside, axis)[s].sum() >= 100:  # the sphere's large cross-sections
                kind = "skipped" if np.isnan(probability[s]).all() else "visited"
                scores[kind].append(dice(slice_stack(result.mask, axis)[s], slice_stack(inside, axis)[s]))
    assert len(scores["skipped"]) >= 4 and len(scores["visited"]) >= 4
    assert min(scores["skipped"]) >= 0.6
    assert abs(np.mean(scores["skipped"]) - np.mean(scores["visited"])) <= 0.1


@pytest.mark.parametrize("step", [0, -1, 1.5, True, "2"])
def test_bad_step_is_refused(sphere, step):
    volume, _ = sphere
    with pytest.raises(ValueError, match="other_axes_step must be a whole number of at least 1"):
        segment_volume(volume, Prompt.from_box((12, 13, SEED_K), (26, 27, SEED_K)), model="medsam-lite", device="cpu",
                       propagation=PropagationOptions(other_axes_step=step))

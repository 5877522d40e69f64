"""Six-orientation orchestration, fusion and crop on a synthetic phantom whose 3D shape is known.

`ScriptedStandInEngine` is a scripted stand-in for a model, used only to test orchestration:
it "segments" the bright pixels (> 127) connected to the prompt or to the previous slice's mask, so a correct orchestration recovers the
phantom exactly and any error in pass order, seed planes, cropping, square-pixel resampling or
the mapping back to KJI shows up as wrong voxels. The real models run the same orchestration in
test_api.py (sam2 code) and test_real_data.py (LiteMedSAM weights on real CT).
"""

import numpy as np
import pytest
from geometry_cases import GEOMETRIES

from MemSegLogic.core.geometry import in_plane_axes, slice_stack
from MemSegLogic.core.prompt import Prompt
from MemSegLogic.core.volume import Volume
from MemSegLogic.engines.base import CarriedMaskEngine
from MemSegLogic.progress import Monitor
from MemSegLogic.volume3d.fusion import fuse
from MemSegLogic.volume3d.propagation import SquarePixels, Window, object_window, propagate_volume, seed_plane

LOGIT = 10.0


class _RecordingStack:
    """The frames an engine gets, logging which frame indices it reads, in order."""

    def __init__(self, frames, log):
        self.frames, self.log = frames, log
        self.shape = frames.shape

    def __len__(self):
        return len(self.frames)

    def __getitem__(self, index):
        self.log.append(int(index))
        return self.frames[index]


class ScriptedStandInEngine(CarriedMaskEngine):
    """Scripted stand-in (no model): the bright region touching the prompt or the carried mask."""

    name = "scripted-stand-in"

    def __init__(self):
        self.calls = []

    def input_scale(self, frame_shape):
        return 1.0, 1.0  # it looks at the frames as they are

    def propagate(self, frames, seeds, monitor, absent_slices=None, memory=None):
        call = {"frames": frames.copy(), "seeds": dict(seeds), "order": []}
        self.calls.append(call)
        return super().propagate(_RecordingStack(frames, call["order"]), seeds, monitor, absent_slices, memory)

    @staticmethod
    def _logits(frame, region):
        """The bright pixels connected to ``region`` (grown 4-connected through bright pixels)."""
        bright = frame > 127
        mask = bright & region
        while True:
            grown = mask.copy()
            grown[1:] |= mask[:-1]
            grown[:-1] |= mask[1:]
            grown[:, 1:] |= mask[:, :-1]
            grown[:, :-1] |= mask[:, 1:]
            grown &= bright
            if (grown == mask).all():
                return np.where(mask, LOGIT, -LOGIT).astype(np.float32), mask, None
            mask = grown

    def segment_seed(self, frame, seed):
        region = np.zeros(frame.shape, dtype=bool)
        if seed.mask is not None:
            region |= seed.mask
        for x, y in np.rint(seed.points_xy[seed.labels == 1]).astype(int):
            region[y, x] = True
        if seed.box_xyxy is not None:
            x0, y0, x1, y1 = np.rint(seed.box_xyxy).astype(int)
            region[y0:y1 + 1, x0:x1 + 1] = True
        return self._logits(frame, region)

    def segment_next(self, frame, carried):
        return self._logits(frame, carried)


def _phantom(shape=(100, 40, 44), spacing=(1.0, 1.0, 1.0), geometry="identity"):
    """(image uint8 KJI, truth mask, Volume): an off-centre ellipsoid spanning K 40..59 (20 of
    100 slices) with a notch, so any transpose or flip of the result is wrong somewhere."""
    k, j, i = np.indices(shape)
    truth = ((k - 49.5) / 10.2) ** 2 + ((j - 18) / 9.0) ** 2 + ((i - 25) / 12.0) ** 2 < 1
    truth &= ~((i > 30) & (j < 14))  # the notch breaks every symmetry
    image = np.where(truth, 200, 30).astype(np.uint8)
    matrix = GEOMETRIES[geometry].copy()
    matrix[:3, :3] = matrix[:3, :3] / np.linalg.norm(matrix[:3, :3], axis=0) * np.asarray(spacing)
    return image, truth, Volume(image.astype(np.float32), matrix)


def _seed_on(truth, axis):
    """A positive point at the centre of the phantom's middle slice along ``axis``."""
    coords = np.argwhere(truth)[:, ::-1]  # IJK
    centre = np.rint(coords.mean(axis=0)).astype(int)
    return Prompt.from_points([centre], axis=axis)


@pytest.mark.parametrize("seed_axis", [0, 1, 2])
@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.7, 0.7, 2.5)], ids=["isotropic", "anisotropic"])
@pytest.mark.parametrize("crop_frames", [False, True], ids=["whole-frames", "cropped-frames"])
def test_every_voxel_of_the_phantom_is_recovered_from_any_seed_axis(seed_axis, spacing, crop_frames):
    image, truth, volume = _phantom(spacing=spacing)
    prompt = _seed_on(truth, seed_axis)
    prompt.check(volume)
    engine = ScriptedStandInEngine()
    passes = propagate_volume(engine, image, volume.spacing, seed_axis,
                              {prompt.slice_index: prompt.to_slice_prompt()}, axes=3, crop_frames=crop_frames)
    # pass order: the seed's axis, then the two others in I, J, K order, one engine call each
    assert [p.axis for p in passes] == [seed_axis] + [a for a in range(3) if a != seed_axis]
    assert len(engine.calls) == 3
    for axis_pass in passes:
        covered = ~np.isnan(axis_pass.probability)
        assert covered[truth].all(), f"axis {axis_pass.name} missed phantom voxels"
        np.testing.assert_array_equal(axis_pass.probability[covered] > 0.5, truth[covered])
    for mode in ("weighted", "mean", "vote"):
        _, mask = fuse([p.probability for p in passes], mode, 0.5, [p.axis for p in passes], volume.spacing)
        np.testing.assert_array_equal(mask.astype(bool), truth)


@pytest.mark.parametrize("seed_axis", [0, 1, 2])
def test_seed_planes_are_the_first_pass_cross_sections_through_the_seed(seed_axis):
    image, truth, volume = _phantom()
    prompt = _seed_on(truth, seed_axis)
    engine = ScriptedStandInEngine()
    passes = propagate_volume(engine, image, volume.spacing, seed_axis,
                              {prompt.slice_index: prompt.to_slice_prompt()}, axes=3, crop=False)
    centre = np.argwhere(slice_stack(truth, seed_axis)[prompt.slice_index])  # (row, col) of the seed frame
    x_axis, y_axis = in_plane_axes(seed_axis)
    for call, axis_pass in zip(engine.calls[1:], passes[1:]):
        (plane, seed), = call["seeds"].items()
        expected_plane = int(round(centre[:, 1 if axis_pass.axis == x_axis else 0].mean()))
        assert plane == expected_plane and axis_pass.seeds == (plane,)
        np.testing.assert_array_equal(seed.mask, slice_stack(truth, axis_pass.axis)[plane])
        # visiting order: the seed, forward to the object's end, then backward from the seed
        order = call["order"]
        assert order[0] == plane
        turn = int(np.argmin(np.diff(order))) + 1
        assert order[1:turn] == list(range(plane + 1, order[turn - 1] + 1))
        assert order[turn:] == list(range(plane - 1, plane - 1 - len(order[turn:]), -1))


@pytest.mark.parametrize("geometry", sorted(GEOMETRIES))
def test_a_seed_clicked_in_ras_recovers_the_phantom_on_every_geometry(geometry):
    """Flipped, permuted and oblique grids: the RAS click lands on its voxel and the fused mask
    is the phantom, voxel for voxel, in KJI."""
    spacing = np.linalg.norm(GEOMETRIES[geometry][:3, :3], axis=0)
    image, truth, volume = _phantom(shape=(60, 36, 40), spacing=spacing, geometry=geometry)
    truth_centre = np.rint(np.argwhere(truth)[:, ::-1].mean(axis=0))
    prompt = Prompt.from_ras(volume, positive=[volume.ijk_to_ras_points(truth_centre)], axis="J")
    assert prompt.slice_index == truth_centre[1]
    passes = propagate_volume(ScriptedStandInEngine(), image, volume.spacing, prompt.axis,
                              {prompt.slice_index: prompt.to_slice_prompt()}, axes=3)
    _, mask = fuse([p.probability for p in passes], "weighted", 0.5, [p.axis for p in passes], volume.spacing)
    np.testing.assert_array_equal(mask.astype(bool), truth)


def test_early_stop_and_crop_visit_far_fewer_slices():
    """The object spans 20 of 100 K slices: no axis visits anywhere near all its slices."""
    image, truth, volume = _phantom()
    prompt = _seed_on(truth, 2)
    passes = propagate_volume(ScriptedStandInEngine(), image, volume.spacing, 2,
                              {prompt.slice_index: prompt.to_slice_prompt()}, axes=3, absent_slices=3,
                              crop_frames=True)
    k_pass = passes[0]
    assert k_pass.slices_visited == 20 + 2 * 3  # the object's slices plus 3 absent ones each way
    for axis_pass in passes[1:]:
        extent = np.flatnonzero(slice_stack(truth, axis_pass.axis).any(axis=(1, 2)))
        assert axis_pass.slices_visited <= len(extent) + 2 * 3
        window = axis_pass.window
        assert window.first <= extent.min() and window.last >= extent.max()
        # frames are cropped in-plane too: the K range of an I or J frame is the object's plus margin
        assert window.rows[1] - window.rows[0] < 100
    assert k_pass.slices_visited < 0.3 * 100
    # without the stop rule the seed axis visits every slice
    everything = propagate_volume(ScriptedStandInEngine(), image, volume.spacing, 2,
                                  {prompt.slice_index: prompt.to_slice_prompt()}, axes=1, absent_slices=0)
    assert everything[0].slices_visited == 100
    # a carried-mask engine's own default stops at the first empty slice past the object
    default = propagate_volume(ScriptedStandInEngine(), image, volume.spacing, 2,
                               {prompt.slice_index: prompt.to_slice_prompt()}, axes=1)
    assert default[0].slices_visited == 20 + 2 * ScriptedStandInEngine.absent_slices == 22


def test_anisotropic_frames_reach_the_model_with_square_pixels():
    image, truth, volume = _phantom(spacing=(0.7, 0.7, 2.5))
    prompt = _seed_on(truth, 2)
    engine = ScriptedStandInEngine()
    passes = propagate_volume(engine, image, volume.spacing, 2, {prompt.slice_index: prompt.to_slice_prompt()},
                              axes=3, crop=False)
    assert engine.calls[0]["frames"].shape[1:] == (40, 44)  # K slices: 0.7 x 0.7 mm already square
    for call, axis_pass in zip(engine.calls[1:], passes[1:]):
        assert axis_pass.window.rows == (0, 100)  # whole frames: only the slice range is cropped
        rows, cols = call["frames"].shape[1:]
        assert (rows, cols) == axis_pass.model_frame_shape
        assert rows == round(100 * 2.5 / 0.7)  # rows run along K (2.5 mm) -> upsampled to 0.7 mm


@pytest.mark.parametrize("shape, spacing", [((13, 29), (2.5, 0.7)), ((31, 7), (0.6, 1.9)), ((16, 16), (1, 1))])
def test_square_pixel_resampling_maps_back_onto_the_same_pixels(shape, spacing):
    rng = np.random.default_rng(3)
    binary = rng.random((4,) + shape) > 0.5
    grid = SquarePixels(shape, spacing)
    model_rows, model_cols = grid.model_shape
    assert abs(spacing[0] * shape[0] / model_rows - spacing[1] * shape[1] / model_cols) < 0.05
    up = grid.frames(np.where(binary, 255, 0).astype(np.uint8))
    back = grid.logits_back(np.where(up > 127, LOGIT, -LOGIT).astype(np.float32))
    np.testing.assert_array_equal(back > 0, binary)


def test_prompts_follow_square_pixel_resampling():
    from MemSegLogic.core.prompt import SlicePrompt

    grid = SquarePixels((10, 20), (3.0, 1.0))  # rows tripled
    seed = SlicePrompt(0, np.array([[4.0, 2.0]]), np.array([1]), np.array([1.0, 2.0, 5.0, 4.0]),
                       np.eye(10, 20, dtype=bool))
    moved = grid.prompt(seed)
    np.testing.assert_allclose(moved.points_xy, [[4.0, 7.0]])  # row 2 centre -> (2.5 * 3) - 0.5
    np.testing.assert_allclose(moved.box_xyxy, [1.0, 6.0, 5.0, 14.0])  # rows 2..4 -> model rows 6..14
    assert moved.mask.shape == (30, 20) and moved.mask[7, 2] and not moved.mask[7, 3]


def test_window_moves_prompts_and_object_window_is_square_in_mm():
    from MemSegLogic.core.prompt import SlicePrompt

    window = Window(5, 20, (10, 30), (4, 40))
    seed = SlicePrompt(8, np.array([[6.0, 12.0]]), np.array([1]), np.array([4.0, 10.0, 9.0, 15.0]),
                       np.ones((50, 60), dtype=bool))
    local = window.local_prompt(seed)
    assert local.frame_index == 3 and local.mask.shape == (20, 36)
    np.testing.assert_allclose(local.points_xy, [[2.0, 2.0]])
    np.testing.assert_allclose(local.box_xyxy, [0.0, 0.0, 5.0, 5.0])

    mask = np.zeros((30, 64, 64), dtype=bool)  # KJI; object 4 K x 10 J x 30 I voxels
    mask[10:14, 20:30, 10:40] = True
    spacing = (1.0, 1.0, 4.0)
    frame = object_window(mask, 1, spacing, margin_fraction=0.0, margin_voxels=1)  # J frames: rows K, cols I
    assert (frame.first, frame.last) == (19, 30)
    rows_mm = (frame.rows[1] - frame.rows[0]) * 4.0
    cols_mm = (frame.cols[1] - frame.cols[0]) * 1.0
    assert abs(rows_mm - cols_mm) <= 4.0 and frame.rows[0] <= 9 and frame.rows[1] >= 15


def test_seed_plane_falls_back_to_the_largest_cross_section_when_the_centre_misses():
    """Two blobs on the seed slice (say, both lungs in one box): the plane through their common
    centroid crosses neither, so the plane with the largest cross-section is used."""
    mask = np.zeros((9, 20, 24), dtype=bool)
    mask[:, 4:16, 2:7] = True  # the larger blob: 12 rows x 5 cols
    mask[2:7, 6:12, 15:20] = True
    centroid = np.argwhere(mask[4])[:, 1].mean()
    assert not mask[:, :, int(round(centroid))].any()
    assert seed_plane(mask, 2, 4, 0) == 2  # every column 2..6 holds 9 x 12 voxels: the first wins
    assert seed_plane(mask, 2, 4, 1) == round(np.argwhere(mask[4])[:, 0].mean())
    assert seed_plane(np.zeros_like(mask), 2, 4, 0) is None


def test_fusion_on_hand_made_disagreements():
    nan = np.nan
    k = np.array([0.9, 0.9, 0.2, 0.6, nan, nan, 0.7])
    i = np.array([0.8, 0.1, 0.3, 0.4, 0.8, nan, 0.1])
    j = np.array([0.2, 0.1, 0.9, nan, nan, nan, 0.1])
    mean, mean_mask = fuse([k, i, j], "mean")
    np.testing.assert_allclose(mean, [0.6333333, 0.3666667, 0.4666667, 0.5, 0.8, 0.0, 0.3], atol=1e-6)
    # a voxel covered by one axis keeps that axis' value; none covered -> 0
    assert mean[4] == np.float32(0.8) and mean[5] == 0.0
    np.testing.assert_array_equal(mean_mask, [1, 0, 0, 0, 1, 0, 0])
    _, vote_mask = fuse([k, i, j], "vote")
    # 2 of 3; 1 of 3; 1 of 3; a 1-1 tie goes to the mean (0.5 is not > 0.5); single axis; none; 1 of 3
    np.testing.assert_array_equal(vote_mask, [1, 0, 0, 0, 1, 0, 0])
    _, tie = fuse([np.array([0.9]), np.array([0.3])], "vote")
    assert tie[0] == 1  # tie, mean 0.6
    _, outvoted = fuse([np.array([0.99]), np.array([0.4]), np.array([0.45])], "vote")
    _, averaged = fuse([np.array([0.99]), np.array([0.4]), np.array([0.45])], "mean")
    assert outvoted[0] == 0 and averaged[0] == 1  # where mean and vote differ
    with pytest.raises(ValueError, match="fusion must be one of"):
        fuse([k], "max")
    with pytest.raises(ValueError, match="needs the axis of each probability"):
        fuse([k, i, j], "weighted")


def test_weighted_fusion_trusts_fine_pixels_and_drops_slices_the_other_axes_refute():
    """KJI (3, 2, 2), spacing 1 x 1 x 4 mm: K frames have 1 mm² pixels, I and J frames 4 mm²
    (weights 1, 1/4, 1/4). K slice 0: K sure everywhere, I and J doubt one voxel -> the fine axis
    wins there (the plain mean and the vote do not). K slice 1: K sees the object, I and J see
    nothing on the whole slice -> K's slice is refuted and drops out. K slice 2: only K looked ->
    K's value stays."""
    from MemSegLogic.volume3d.fusion import UNCONFIRMED_WEIGHT, agreement, slice_weights

    k = np.full((3, 2, 2), 0.9, dtype=np.float32)
    i = np.full((3, 2, 2), 0.9, dtype=np.float32)
    i[0, 0, 0] = 0.2
    i[1] = 0.1
    i[2] = np.nan
    j = i.copy()
    probabilities, axes, spacing = [k, i, j], [2, 0, 1], (1.0, 1.0, 4.0)

    scores = agreement(probabilities, axes)
    # K slice 0: 4 voxels vs the others' 3 (0.2 + 0.2 < 1) -> 6/7; slice 1: 4 vs 0; slice 2: nobody else looked
    np.testing.assert_allclose(scores[0], [6 / 7, 0.0, 1.0])
    # I column 0 over K slices 0-1 where K or J looked too: I has (k0, j1); K+J mean has (k0, j0), (k0, j1)
    np.testing.assert_allclose(scores[1], [2 / 3, 1.0])
    weights = slice_weights(probabilities, axes, spacing)
    np.testing.assert_allclose(weights[0], [1.0, UNCONFIRMED_WEIGHT, 1.0])
    np.testing.assert_allclose(weights[1], [0.25, 0.25])
    # two axes, refuting each other on every slice: equal token weights, i.e. the plain mean
    a, b = np.zeros((3, 2, 2), np.float32), np.zeros((3, 2, 2), np.float32)
    a[:, 0, :], b[:, 1, :] = 0.9, 0.8
    weights = slice_weights([a, b], [2, 0], spacing)
    assert all((w == UNCONFIRMED_WEIGHT).all() for w in weights)
    np.testing.assert_allclose(fuse([a, b], "weighted", 0.5, [2, 0], spacing)[0], fuse([a, b], "mean")[0])

    weighted, mask = fuse(probabilities, "weighted", 0.5, axes, spacing)
    np.testing.assert_allclose(weighted[0, 0, 0], (0.9 + 0.25 * 0.2 * 2) / 1.5, rtol=1e-6)
    np.testing.assert_array_equal(mask, [[[1, 1], [1, 1]], [[0, 0], [0, 0]], [[1, 1], [1, 1]]])
    np.testing.assert_allclose(weighted[2], 0.9)  # covered by K alone: its value
    _, plain = fuse(probabilities, "mean")
    _, voted = fuse(probabilities, "vote")
    assert plain[0, 0, 0] == 0 and voted[0, 0, 0] == 0  # where the weights matter
    # on isotropic voxels the resolution weights are equal
    np.testing.assert_allclose([w[0] for w in slice_weights(probabilities, axes, (2.0, 2.0, 2.0))], 1.0)


def test_no_object_on_the_seed_slice_is_a_clear_error():
    from MemSegLogic.errors import InvalidPromptError

    image, truth, volume = _phantom()
    prompt = Prompt.from_points([[2, 2, 49]])  # dark corner: the stand-in finds nothing there
    with pytest.raises(InvalidPromptError, match="found no object on the seed slice K=49"):
        propagate_volume(ScriptedStandInEngine(), image, volume.spacing, 2,
                         {prompt.slice_index: prompt.to_slice_prompt()}, axes=3, monitor=Monitor())


def test_weighted_fusion_leaves_out_an_axis_that_contradicts_the_seed_slice():
    """KJI (4, 4, 4), seed axis K with seed slice 1. I reproduces K's mask on that slice (Dice 1)
    and is kept; J finds a different region there (Dice 0) and is left out altogether, also
    where it alone looked. The plain mean keeps every axis."""
    from MemSegLogic.volume3d.fusion import seed_agreement

    k = np.full((4, 4, 4), np.nan, dtype=np.float32)
    k[:3] = 0.1
    k[:3, :2, :2] = 0.9
    i = k.copy()
    j = np.full((4, 4, 4), 0.1, dtype=np.float32)
    j[:, 2:, 2:] = 0.9  # elsewhere on every slice, and it alone covers K slice 3
    probabilities, axes, spacing = [k, i, j], [2, 0, 1], (1.0, 1.0, 1.0)

    np.testing.assert_allclose(seed_agreement(probabilities, axes, [1]), [1.0, 1.0, 0.0])
    weighted, mask = fuse(probabilities, "weighted", 0.5, axes, spacing, seed_slices=[1])
    np.testing.assert_array_equal(mask[:3], k[:3] > 0.5)
    assert not mask[3].any() and np.isnan(k[3]).all()  # only J looked there, and J is out
    with_j, _ = fuse(probabilities, "weighted", 0.5, axes, spacing)  # no seed slice given: J stays
    assert with_j[3, 3, 3] == pytest.approx(0.9)
    plain, _ = fuse(probabilities, "mean", 0.5, axes, spacing, seed_slices=[1])
    assert plain[0, 3, 3] == pytest.approx((0.1 + 0.1 + 0.9) / 3)


class _ScriptedConfidenceEngine(CarriedMaskEngine):
    """Scripted stand-in (no model): every frame holds the object; its 'confidence' per frame is
    read from a script, to test the confidence stop of the carried-mask loop."""

    name = "scripted-confidence-stand-in"

    def __init__(self, confidence):
        self.confidence = confidence

    def segment_seed(self, frame, seed):
        return np.full(frame.shape, LOGIT, np.float32), True, self.confidence[int(frame[0, 0])]

    def segment_next(self, frame, carried):
        return np.full(frame.shape, LOGIT, np.float32), True, self.confidence[int(frame[0, 0])]


def test_a_carried_mask_direction_ends_at_the_first_unsure_slice_past_the_seeds():
    """Frames 0..9, seeds on 3 and 6; confidence is compared with the best of the direction so
    far. Forward from seed 3: slice 4 (0.5) lies between the seeds, so it is kept; past seed 6
    the best is 0.95 (slice 5), slice 7 (0.85) is kept, slice 8 (0.7) is more than 0.15 below ->
    the direction ends and 8, 9 stay unvisited. Backward from seed 6: again 4 is kept; past
    seed 3 slice 2 (0.85) is kept and slice 1 (0.75) ends it."""
    frames = np.arange(10, dtype=np.uint8)[:, None, None].repeat(2, 1).repeat(2, 2)
    confidence = [0.9, 0.75, 0.85, 0.8, 0.5, 0.95, 0.9, 0.85, 0.7, 0.95]
    seeds = {3: None, 6: None}
    result = _ScriptedConfidenceEngine(confidence).propagate(frames, seeds, Monitor())
    np.testing.assert_array_equal(np.flatnonzero(result.visited), [2, 3, 4, 5, 6, 7])
    assert (result.logits[[0, 1, 8, 9]] < -1000).all()
    engine = _ScriptedConfidenceEngine(confidence)
    engine.confidence_drop = None  # off: only the absence rule, which never fires here
    assert engine.propagate(frames, seeds, Monitor()).visited.all()


class _ScriptedJumpEngine(CarriedMaskEngine):
    """Scripted stand-in (no model), sure of itself everywhere: frame i's mask is the 4-pixel
    square at the column its first pixel names, so the script says where the object jumps."""

    name = "scripted-jump-stand-in"

    def _square(self, frame):
        logits = np.full(frame.shape, -LOGIT, np.float32)
        column = int(frame[0, 0])
        logits[2:6, column:column + 4] = LOGIT
        return logits, True, 0.9

    def segment_seed(self, frame, seed):
        return self._square(frame)

    def segment_next(self, frame, carried):
        return self._square(frame)


def test_a_carried_mask_direction_ends_where_the_mask_jumps_to_other_tissue():
    """Seed on 2. Forward, the square moves 1 pixel a slice (overlap 0.75: the same object
    growing or shifting) until slice 5, where it jumps 8 pixels (no overlap): the direction ends
    there and 5, 6 stay unvisited, although the model is as sure as on the object. Backward,
    slice 0 shifts 2 pixels (overlap 0.5) and is kept. With the rule off every slice is visited."""
    columns = [4, 6, 6, 7, 8, 16, 17]
    frames = np.zeros((len(columns), 8, 24), np.uint8)
    frames[:, 0, 0] = columns
    seeds = {2: None}
    result = _ScriptedJumpEngine().propagate(frames, seeds, Monitor())
    np.testing.assert_array_equal(np.flatnonzero(result.visited), [0, 1, 2, 3, 4])
    assert (result.logits[[5, 6]] < -1000).all()
    engine = _ScriptedJumpEngine()
    engine.min_overlap = None
    assert engine.propagate(frames, seeds, Monitor()).visited.all()


def test_a_less_sure_model_is_allowed_a_larger_drop():
    """Where the best estimate is only 0.8 the drop allowed is 1.5 x (1 - 0.8) = 0.3, not 0.15:
    forward from the seed on 0, slice 1 (0.55, 0.25 below) is kept and slice 2 (0.45) ends it;
    told to allow 0.15 whatever the best, slice 1 ends it."""
    frames = np.arange(4, dtype=np.uint8)[:, None, None].repeat(2, 1).repeat(2, 2)
    confidence = [0.8, 0.55, 0.45, 0.8]
    result = _ScriptedConfidenceEngine(confidence).propagate(frames, {0: None}, Monitor())
    np.testing.assert_array_equal(np.flatnonzero(result.visited), [0, 1])
    engine = _ScriptedConfidenceEngine(confidence)
    engine.drop_per_doubt = 0.0
    np.testing.assert_array_equal(np.flatnonzero(engine.propagate(frames, {0: None}, Monitor()).visited), [0])


def test_other_axes_are_skipped_where_the_object_is_too_thin_for_the_model():
    """lung2-like geometry (0.63 x 0.63 x 5 mm, 61 x 512 x 512, lesion over 11 K slices): in I
    frames (61 x 512) LiteMedSAM shrinks the longest side to 256, so the lesion spans 11 x 0.5 =
    5.5 input pixels along K; SAM 2 stretches the frame resampled to square pixels
    (61 x 5 / 0.63 = 484 rows) to 1024 rows: 11 x 1024 / 61 = 184.6 pixels. The orchestration
    then skips the thin case and says why; a 20-slice object on 1 mm voxels is run."""
    from MemSegLogic.engines.base import Engine
    from MemSegLogic.engines.lite_medsam import LiteMedSAMEngine
    from MemSegLogic.volume3d.propagation import MIN_MODEL_PIXELS, object_span_in_model

    mask = np.zeros((61, 512, 512), dtype=bool)
    mask[15:26, 200:260, 300:340] = True
    window = Window.whole((512, 61, 512))  # I frames: rows K, cols J
    spacing = (0.63, 0.63, 5.0)
    lite = LiteMedSAMEngine.__new__(LiteMedSAMEngine)  # its geometry only, no weights
    lite.image_size = 256
    sam2 = Engine()
    sam2.image_size = 1024
    assert object_span_in_model(mask, 2, 0, window, spacing, lite, False) == pytest.approx(5.5)
    assert object_span_in_model(mask, 2, 0, window, spacing, sam2, True) == pytest.approx(
        11 * 1024 / 61, rel=0.01)

    engine = ScriptedStandInEngine()  # sees frames as they are: span = slices x square-pixel factor
    image, truth, volume = _phantom(spacing=(1.0, 1.0, 1.0))  # 20 slices thick
    prompt = _seed_on(truth, 2)
    seeds = {prompt.slice_index: prompt.to_slice_prompt()}
    assert len(propagate_volume(engine, image, volume.spacing, 2, seeds, axes=3)) == 3
    k = prompt.slice_index
    thin = np.zeros_like(image)
    thin[k - 1:k + 2] = image[k - 1:k + 2]  # 3 slices of 5 mm: 15 pixels once resampled to square pixels
    passes = propagate_volume(engine, thin, (1.0, 1.0, 5.0), 2, seeds, axes=3)
    assert [p.axis for p in passes] == [2] and set(passes.skipped) == {"I", "J"}
    assert f"(< {MIN_MODEL_PIXELS})" in passes.skipped["I"] and "15.0 pixels" in passes.skipped["I"]

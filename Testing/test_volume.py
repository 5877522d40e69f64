"""Volume I/O and geometry: every route keeps each voxel at its RAS position."""

import numpy as np
import pytest
from geometry_cases import GEOMETRIES, assert_same_voxels_by_position

from MemSegLogic import InvalidVolumeError, Volume


def _volume(name, shape=(7, 9, 11)):
    rng = np.random.default_rng(3)
    return Volume(rng.integers(-1000, 2000, size=shape).astype(np.int16), GEOMETRIES[name])


@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz", ".nii", ".mha"])
@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_file_round_trip_keeps_voxels_and_geometry(tmp_path, name, suffix):
    volume = _volume(name)
    path = tmp_path / f"v{suffix}"
    volume.write(path)
    back = Volume.read(path)
    np.testing.assert_array_equal(back.array, volume.array)
    # NIfTI stores geometry in float32: exact to its precision, nrrd/mha to double precision.
    tolerance = 1e-4 if suffix.startswith(".nii") else 1e-9
    np.testing.assert_allclose(back.ijk_to_ras, volume.ijk_to_ras, atol=tolerance)


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_dicom_series_round_trip_keeps_every_voxel_position(tmp_path, name):
    """A DICOM reader sorts slices by position, so the K order may come back reversed: compare
    what sits at each RAS position instead of the arrays."""
    volume = _volume(name)
    volume.write(tmp_path / "series")
    back = Volume.read(tmp_path / "series")
    assert sorted(back.shape_kji) == sorted(volume.shape_kji)
    np.testing.assert_allclose(back.spacing, volume.spacing, atol=1e-4)
    assert_same_voxels_by_position(back, volume)


def test_lps_file_becomes_ras_in_memory(tmp_path):
    """slicerio's chest CT is stored LPS; in memory I must point to patient Right, as in Slicer."""
    import slicerio

    volume = Volume.read(slicerio.get_testdata_file("CTChest4.nrrd"))
    np.testing.assert_allclose(volume.ijk_to_ras[:3, 3], [-193.096, -216.396, -340.25], atol=1e-3)
    assert volume.ijk_to_ras[0, 0] > 0 and volume.ijk_to_ras[1, 1] > 0


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_ras_point_lands_on_intended_voxel(name):
    volume = _volume(name)
    for target in ([0, 0, 0], [10, 8, 6], [3, 4, 5]):
        ras = volume.ijk_to_ras_points(np.array(target) + np.array([0.4, -0.4, 0.3]))
        np.testing.assert_array_equal(np.rint(volume.ras_to_ijk(ras)), target)


@pytest.mark.parametrize("array, message", [
    (np.zeros((1, 8, 8)), "2D"),
    (np.zeros((4, 8, 8, 3), np.uint8), "RGB"),
    (np.full((4, 8, 8), np.nan), "NaN"),
    (np.ones((4, 8, 8)), "constant"),
    (np.zeros((8, 8)), "3D scalar"),
])
def test_unsegmentable_volumes_are_rejected_with_a_reason(array, message):
    with pytest.raises(InvalidVolumeError, match=message):
        Volume(array).check_segmentable()


def test_unreadable_file_is_a_clear_error(tmp_path):
    broken = tmp_path / "broken.nrrd"
    broken.write_bytes(b"NRRD0004\nthis is not a volume\n")
    with pytest.raises(InvalidVolumeError, match="cannot read"):
        Volume.read(broken)
    with pytest.raises(InvalidVolumeError, match="no such file"):
        Volume.read(tmp_path / "missing.nrrd")


def test_slab_keeps_every_voxels_ras_position():
    from geometry_cases import GEOMETRIES

    from MemSegLogic import Volume

    volume = Volume(np.arange(6 * 5 * 4, dtype=np.float32).reshape(6, 5, 4), GEOMETRIES["oblique"])
    slab = volume.slab(2, 3)
    np.testing.assert_array_equal(slab.array, volume.array[2:5])
    ijk = np.array([[0, 0, 0], [3, 4, 2], [1, 2, 1]], dtype=np.float64)
    np.testing.assert_allclose(slab.ijk_to_ras_points(ijk), volume.ijk_to_ras_points(ijk + [0, 0, 2]), atol=1e-9)
    slab.array[:] = -1  # a copy: the source is untouched
    assert volume.array.min() == 0

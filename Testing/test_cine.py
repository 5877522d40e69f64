"""`Cine` file IO without Slicer: Slicer's .seq.nrrd (grey and RGB; geometry and time index kept,
axes laid out as Slicer writes them, checked with slicerio), time-last and 3D+t NRRD, and
multi-frame DICOM read as Slicer's DICOM image-sequence plugin loads it (pydicom's real files)."""

from __future__ import annotations

import numpy as np
import pytest
from geometry_cases import GEOMETRIES

from MemSegLogic.cine import Cine
from MemSegLogic.core.volume import LPS_TO_RAS
from MemSegLogic.errors import InvalidVolumeError

TIMES = ("0", "0.04", "0.08", "0.12")


def _frames(kind: str) -> np.ndarray:
    rng = np.random.default_rng(1)
    if kind == "rgb":
        return rng.integers(0, 256, (4, 9, 13, 3)).astype(np.uint8)
    if kind == "int16":
        return rng.integers(-500, 500, (4, 9, 13)).astype(np.int16)
    return rng.normal(0.0, 1.0, (4, 9, 13)).astype(np.float32)


@pytest.mark.parametrize("kind", ["rgb", "int16", "float32"])
def test_seq_nrrd_round_trip_and_slicer_layout(tmp_path, kind):
    import slicerio

    frames = _frames(kind)
    matrix = GEOMETRIES["oblique"]
    cine = Cine(frames, matrix, TIMES, "time", "s")
    path = tmp_path / "loop.seq.nrrd"
    cine.write(path)

    back = Cine.read(path)
    np.testing.assert_array_equal(back.frames, frames)
    assert back.frames.dtype == frames.dtype and back.is_color == (kind == "rgb")
    np.testing.assert_allclose(back.ijk_to_ras, matrix, atol=1e-9)
    assert (back.index_values, back.index_name, back.index_unit) == (TIMES, "time", "s")

    # the file as Slicer lays it out: LPS, time last, colour first, one slice per frame
    raw = slicerio.read_volume(str(path))
    np.testing.assert_allclose(LPS_TO_RAS @ np.asarray(raw["ijkToLPS"]), matrix, atol=1e-9)
    assert raw["sequence"]["indexValues"] == list(TIMES)
    voxels = np.asarray(raw["voxels"])
    t, j, i = 2, 7, 11
    if kind == "rgb":
        assert voxels.shape == (3, 13, 9, 1, 4)
        np.testing.assert_array_equal(voxels[:, i, j, 0, t], frames[t, j, i])
    else:
        assert voxels.shape == (13, 9, 1, 4)
        assert voxels[i, j, 0, t] == frames[t, j, i]


def test_text_index_survives(tmp_path):
    cine = Cine(_frames("int16")[:2], np.eye(4), ("ED", "ES"), "phase", "")
    cine.write(tmp_path / "phases.seq.nrrd")
    back = Cine.read(tmp_path / "phases.seq.nrrd")
    assert (back.index_values, back.index_name) == (("ED", "ES"), "phase")
    np.testing.assert_array_equal(back.times(), [0.0, 1.0])  # not numeric: frame numbers


def test_time_last_nrrd(tmp_path):
    frames = _frames("int16")
    matrix = np.diag([-0.3, -0.4, 1.0, 1.0])
    Cine(frames, matrix, TIMES, "time", "s").write(tmp_path / "loop.nrrd")
    back = Cine.read(tmp_path / "loop.nrrd")
    np.testing.assert_array_equal(back.frames, frames)
    np.testing.assert_allclose(back.ijk_to_ras, matrix, atol=1e-9)
    assert back.index_values == ("0", "1", "2", "3")  # a plain 3D file has no time index
    with pytest.raises(InvalidVolumeError, match="only .seq.nrrd keeps RGB"):
        Cine(_frames("rgb"), matrix).write(tmp_path / "colour.nrrd")


def test_3d_plus_t_needs_a_plane(tmp_path):
    import slicerio

    rng = np.random.default_rng(2)
    volumes = rng.integers(0, 200, (3, 5, 9, 11)).astype(np.int16)  # (T, K, J, I)
    ijk_to_ras = GEOMETRIES["permuted"]
    slicerio.write_volume(str(tmp_path / "heart.seq.nrrd"), {
        "voxels": np.ascontiguousarray(np.transpose(volumes, (3, 2, 1, 0))), "ijkToLPS": LPS_TO_RAS @ ijk_to_ras,
        "spaceDimension": 3, "sequence": {"indexName": "time", "indexUnit": "s", "indexType": "numeric",
                                          "indexValues": ["0", "0.1", "0.2"]}})
    with pytest.raises(InvalidVolumeError, match="3D\\+t.*plane"):
        Cine.read(tmp_path / "heart.seq.nrrd")
    cine = Cine.read(tmp_path / "heart.seq.nrrd", plane=("J", 4))
    np.testing.assert_array_equal(cine.frames, volumes[:, :, 4, :])  # rows = K, columns = I
    # a frame pixel (x, y) sits where voxel (i=x, j=4, k=y) sits
    x, y = 7, 3
    np.testing.assert_allclose(cine.ijk_to_ras @ [x, y, 0, 1], ijk_to_ras @ [x, 4, y, 1], atol=1e-9)
    with pytest.raises(InvalidVolumeError, match="outside"):
        Cine.read(tmp_path / "heart.seq.nrrd", plane=("J", 9))


def test_dicom_ultrasound_cine_as_slicer_loads_it():
    """pydicom's real echo loop: 30 YBR frames, FrameTime 33.333 ms, one 2D tissue region of
    0.051 cm pixels."""
    from pydicom.data import get_testdata_file

    cine = Cine.read(get_testdata_file("examples_ybr_color.dcm"))
    assert cine.frames.shape == (30, 240, 320, 3) and cine.frames.dtype == np.uint8 and cine.is_color
    spacing = 0.5104970559477806  # PhysicalDeltaX/Y 0.05104970559477806 cm
    np.testing.assert_allclose(cine.ijk_to_ras, np.diag([-spacing, -spacing, 1.0, 1.0]), atol=1e-12)
    assert (cine.index_name, cine.index_unit) == ("time", "s")
    np.testing.assert_allclose(cine.times()[:3], [0.0, 0.033333, 0.066666], atol=1e-9)
    np.testing.assert_allclose(np.diff(cine.times()), 0.033333, atol=2e-6)
    # decoded YBR -> RGB: a real colour image, not three equal planes
    assert np.abs(cine.frames[..., 0].astype(int) - cine.frames[..., 2]).max() > 20
    cine.check_segmentable()


def test_dicom_without_frame_time_or_regions():
    from pydicom.data import get_testdata_file

    cine = Cine.read(get_testdata_file("SC_rgb_rle_2frame.dcm"))  # RGB secondary capture, PixelSpacing 1
    assert cine.frames.shape == (2, 100, 100, 3)
    assert (cine.index_name, cine.index_values) == ("frame", ("0", "1"))
    dose = Cine.read(get_testdata_file("rtdose.dcm"))  # 15 grey frames, PixelSpacing 10 mm
    assert dose.frames.shape == (15, 10, 10) and not dose.is_color
    assert dose.spacing == (10.0, 10.0)


def test_dicom_palette_colour_becomes_rgb():
    """A palette-colour ultrasound image: its pixels index a colour table, so the frames are the
    table's colours, not the indices read as grey."""
    import pydicom
    from pydicom.data import get_testdata_file

    path = get_testdata_file("examples_palette.dcm")
    cine = Cine.read(path)
    assert cine.frames.shape == (1, 350, 800, 3) and cine.frames.dtype == np.uint8
    dataset = pydicom.dcmread(path)
    index = dataset.pixel_array[200, 400]
    red_table = np.frombuffer(dataset.RedPaletteColorLookupTableData, dtype="<u2")
    first = int(dataset.RedPaletteColorLookupTableDescriptor[1])
    assert cine.frames[0, 200, 400, 0] == red_table[max(int(index) - first, 0)] >> 8


def test_unreadable_files(tmp_path):
    with pytest.raises(InvalidVolumeError, match="no such file"):
        Cine.read(tmp_path / "missing.seq.nrrd")
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(InvalidVolumeError, match="unsupported file type"):
        Cine.read(tmp_path / "notes.txt")
    (tmp_path / "broken.seq.nrrd").write_text("NRRD0004\ntype: nonsense\n\n")
    with pytest.raises(InvalidVolumeError, match="cannot read"):
        Cine.read(tmp_path / "broken.seq.nrrd")


def test_is_memsam_says_which_models_take_memsams_memory_setting(tiny_memsam_checkpoint):
    """MemSAM (the weights folder's, a checkpoint file) takes memory_frames; the zero-shot models
    refuse it, so the Slicer effect passes it to MemSAM only."""
    from MemSegLogic.cine import is_memsam, segment_sequence
    from MemSegLogic.cine.segment import frame_prompt

    assert is_memsam("memsam") and is_memsam(str(tiny_memsam_checkpoint)) and is_memsam(tiny_memsam_checkpoint)
    assert not is_memsam("medsam-lite") and not is_memsam("medsam2-us-heart")
    frames = np.random.default_rng(0).integers(0, 255, (2, 32, 32)).astype(np.uint8)
    with pytest.raises(ValueError, match="memory_frames sets MemSAM's memory"):
        segment_sequence(frames, frame_prompt(0, positive=[(16, 16)]), model="medsam-lite", memory_frames=3)

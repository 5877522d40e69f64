"""The `memseg` command line: the real CT end to end, output formats, and bad input."""

import subprocess
import sys

import numpy as np
import pytest
from geometry_cases import GEOMETRIES

from MemSegLogic import Volume
from MemSegLogic.app.demo import seed_box
from MemSegLogic.core.metrics import dice
from MemSegLogic.io.segmentation_io import write_mask


def _memseg(*args):
    return subprocess.run([sys.executable, "-m", "MemSegLogic", "-q", *map(str, args)], capture_output=True, text=True)


def test_segment_real_ct_to_seg_nrrd(tmp_path, chest_ct):
    import slicerio

    volume, segments = chest_ct
    prompt, k = seed_box(segments["right lung"])
    corners = volume.ijk_to_ras_points(prompt.box)
    box = ",".join(f"{v:.4f}" for v in corners.ravel())
    output = tmp_path / "lung.seg.nrrd"
    completed = _memseg("segment", slicerio.get_testdata_file("CTChest4.nrrd"), "--box", box, "--model", "medsam-lite",
                        "--preset", "ct-chest", "--segment-name", "right lung", "--axes", "1", "-o", output)
    assert completed.returncode == 0, completed.stderr
    segmentation = slicerio.read_segmentation(str(output))
    np.testing.assert_allclose(segmentation["ijkToLPS"], np.diag([-1, -1, 1, 1]) @ volume.ijk_to_ras, atol=1e-6)
    assert segmentation["voxels"].shape == volume.shape_ijk
    assert [s["name"] for s in segmentation["segments"]] == ["right lung"]
    mask = slicerio.segment_mask(segmentation, "right lung").transpose(2, 1, 0)
    assert dice(mask, segments["right lung"]) > 0.80


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".seg.nrrd"])
@pytest.mark.parametrize("geometry", ["oblique", "lps-like-flipped"])
def test_mask_outputs_keep_the_grid(tmp_path, suffix, geometry):
    mask = np.zeros((5, 6, 7), np.uint8)
    mask[1:3, 2:5, 3:6] = 1
    path = write_mask(tmp_path / f"m{suffix}", mask, GEOMETRIES[geometry])
    if suffix == ".seg.nrrd":
        import slicerio

        segmentation = slicerio.read_segmentation(str(path))
        back = slicerio.segment_mask(segmentation, "MemSeg").transpose(2, 1, 0).astype(np.uint8)
        matrix = np.diag([-1, -1, 1, 1]) @ segmentation["ijkToLPS"]
    else:
        read = Volume.read(path)
        back, matrix = read.array, read.ijk_to_ras
    np.testing.assert_array_equal(back, mask)
    np.testing.assert_allclose(matrix, GEOMETRIES[geometry], atol=1e-4)


@pytest.mark.parametrize("arguments, message", [
    (["--point", "1,2"], "needs 3 comma-separated numbers"),
    (["--point", "9999,9999,9999"], "outside the volume"),
    (["--negative", "0,-20,-170"], "only negative points"),
    ([], "empty prompt"),
    (["--point", "0,-20,-170", "--model", "sam3"], "unknown model"),
])
def test_bad_input_exits_nonzero_with_one_line(tmp_path, arguments, message):
    import slicerio

    output = tmp_path / "out.seg.nrrd"
    completed = _memseg("segment", slicerio.get_testdata_file("CTChest4.nrrd"), *arguments, "-o", output)
    assert completed.returncode == 2
    lines = completed.stderr.strip().splitlines()
    assert message in lines[-1]
    assert len(lines) == 1 or lines[0].startswith("usage:")  # one reason (argparse adds its usage)
    assert not output.exists()


def test_missing_input_and_weights_commands(tmp_path):
    completed = _memseg("segment", tmp_path / "nope.nrrd", "--point", "0,0,0", "-o", tmp_path / "o.nii.gz")
    assert completed.returncode == 2 and "no such file" in completed.stderr
    listing = _memseg("weights", "list")
    assert listing.returncode == 0 and "medsam2-pretrain" in listing.stdout and "medsam-lite" in listing.stdout
    verify = _memseg("weights", "verify", "medsam-lite")
    assert verify.returncode == 0 and "medsam-lite: OK" in verify.stdout
    offline = subprocess.run([sys.executable, "-m", "MemSegLogic", "-q", "weights", "verify", "medsam2-pretrain"],
                             capture_output=True, text=True)
    assert offline.returncode == 2 and "MedSAM2_pretrain.pth" in offline.stderr


def test_six_orientations_with_two_seeds_from_the_command_line(tmp_path, tiny_sam2_checkpoint, capsys):
    """`memseg segment ... --axes 3 --memory self-sorting` with points on two K slices: two
    conditioning slices on the seed axis, then the two other axes; run in-process so the test
    checkpoint registered by the fixture is visible."""
    from MemSegLogic.app.cli import main

    k, j, i = np.indices((10, 28, 24))
    ball = ((k - 5) / 4.0) ** 2 + ((j - 14) / 9.0) ** 2 + ((i - 12) / 8.0) ** 2 < 1
    volume = Volume((np.random.default_rng(0).normal(0, 20, ball.shape) + 300 * ball).astype(np.float32),
                    GEOMETRIES["lps-like-flipped"])
    path = tmp_path / "ball.nrrd"
    volume.write(path)
    points = volume.ijk_to_ras_points(np.array([[12.0, 14.0, 4.0], [12.0, 14.0, 6.0]]))
    args = ["-q", "segment", str(path), "--model", tiny_sam2_checkpoint.name, "--device", "cpu", "--axes", "3",
            "--memory", "self-sorting", "-o", str(tmp_path / "ball.nii.gz")]
    for point in points:
        args += ["--point", ",".join(f"{v:.5f}" for v in point)]
    assert main(args) == 0, capsys.readouterr().err
    written = Volume.read(tmp_path / "ball.nii.gz")
    assert written.shape_kji == volume.shape_kji
    np.testing.assert_allclose(written.ijk_to_ras, volume.ijk_to_ras, atol=1e-4)

"""Real sample data for the demo, tests and benchmarks — fetched from packages, never vendored.

- slicerio ships a small real chest CT (``CTChest4.nrrd``, 128x128x34, 3.05x3.05x10 mm) with a
  reference ``Segmentation.seg.nrrd`` on the same grid (ribs, vertebrae, lungs, tissue).
- the pyradiomics 3.0.1 *sdist* holds real CT/MR cases with lesion masks (``lung1``, ``lung2``,
  ``brain1``, ``brain2``, ``breast1``); it is downloaded once with pip and cached.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys
import tarfile
import tempfile

import numpy as np

from ..core.volume import Volume
from ..io.atomic import replace_atomically
from ..io.segmentation_io import read_segmentation_file

PYRADIOMICS_CASES = ("lung1", "lung2", "brain1", "brain2", "breast1")


def load_chest_ct() -> tuple:
    """(volume, segments) for slicerio's CTChest4 and its reference segmentation."""
    import slicerio

    volume = Volume.read(slicerio.get_testdata_file("CTChest4.nrrd"))
    segments, ijk_to_ras = read_segmentation_file(slicerio.get_testdata_file("Segmentation.seg.nrrd"))
    assert np.allclose(ijk_to_ras, volume.ijk_to_ras), "slicerio's CT and segmentation grids differ"
    return volume, segments


def fetch_pyradiomics_data(cache_dir) -> pathlib.Path:
    """Folder holding ``<case>_image.nrrd`` and ``<case>_label.nrrd`` for `PYRADIOMICS_CASES`.

    Downloads the pyradiomics 3.0.1 sdist with pip (the wheels do not carry the data) the first
    time; raises RuntimeError when the package index cannot be reached."""
    folder = pathlib.Path(cache_dir) / "pyradiomics-3.0.1"
    wanted = [f"{case}_{kind}.nrrd" for case in PYRADIOMICS_CASES for kind in ("image", "label")]
    if all((folder / name).is_file() for name in wanted):
        return folder
    with tempfile.TemporaryDirectory() as download:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                   "--no-build-isolation", "-d", download, "pyradiomics==3.0.1"]
        completed = subprocess.run(command, capture_output=True, text=True)
        archives = list(pathlib.Path(download).glob("pyradiomics-3.0.1.tar.gz"))
        if completed.returncode != 0 or not archives:
            last = (completed.stderr or completed.stdout).strip().splitlines()[-1:] or ["no archive"]
            raise RuntimeError(f"pip download pyradiomics==3.0.1 failed: {last[0]}")
        folder.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archives[0]) as archive:
            for name in wanted:
                member = archive.getmember(f"pyradiomics-3.0.1/data/{name}")
                with archive.extractfile(member) as source:  # complete files only: the cache trusts what it finds
                    replace_atomically(folder / name, lambda partial: partial.write_bytes(source.read()))
    return folder


def load_pyradiomics_case(folder, case: str) -> tuple:
    """(volume, label mask KJI uint8) of a pyradiomics case."""
    folder = pathlib.Path(folder)
    volume = Volume.read(folder / f"{case}_image.nrrd")
    label = Volume.read(folder / f"{case}_label.nrrd")
    if label.shape_kji != volume.shape_kji or not np.allclose(label.ijk_to_ras, volume.ijk_to_ras, atol=1e-4):
        raise ValueError(f"{case}: label and image grids differ")
    return volume, (label.array > 0).astype(np.uint8)


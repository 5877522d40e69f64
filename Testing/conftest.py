"""Shared fixtures: real data (slicerio's chest CT, pyradiomics' tumour cases), tiny random
SAM 2 and MemSAM checkpoints in the official layouts, and a headless Slicer scene from slicer-core."""

from __future__ import annotations

import os
import pathlib
import sys
import tempfile

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# Tests never read or fill the user's weights cache.
_weights = tempfile.TemporaryDirectory(prefix="memseg-test-weights-")
os.environ["MEMSEG_WEIGHTS_DIR"] = _weights.name

DATA_CACHE = pathlib.Path(os.environ.get("MEMSEG_TEST_DATA", REPO / ".cache" / "test-data"))


# -- real data --------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def chest_ct():
    """slicerio's real chest CT (128x128x34, LPS file) and its reference segmentation."""
    from MemSegLogic.app.samples import load_chest_ct

    return load_chest_ct()


@pytest.fixture(scope="session")
def pyradiomics_data():
    """Folder with pyradiomics' real CT/MR cases, fetched once from PyPI (skips when offline)."""
    from MemSegLogic.app.samples import fetch_pyradiomics_data

    try:
        return fetch_pyradiomics_data(DATA_CACHE)
    except RuntimeError as error:
        pytest.skip(f"pyradiomics test data unavailable: {error}")


# -- a tiny SAM 2 checkpoint ---------------------------------------------------------------------
@pytest.fixture(scope="session")
def tiny_sam2_checkpoint():
    """Random-weight SAM 2.0 Hiera-T at 256 px saved as ``{"model": state_dict}`` (bf16, like
    MedSAM2_pretrain.pth) and registered, so tests go through the real registry and loader."""
    from random_weights import save_random_sam2

    from MemSegLogic.runtime.checkpoints import Checkpoint, register_checkpoint, sha256_of, unregister_checkpoint

    config, size = "configs/sam2/sam2_hiera_t.yaml", 256
    path = save_random_sam2(pathlib.Path(os.environ["MEMSEG_WEIGHTS_DIR"]) / "tiny_sam2_hiera_t_random.pt", config, size)
    checkpoint = register_checkpoint(Checkpoint(
        name="test-sam2-hiera-t-random", engine="medsam2", filename=path.name, sha256=sha256_of(path),
        config=config, image_size=size, license="test", description="random weights for tests"), replace=True)
    yield checkpoint
    unregister_checkpoint(checkpoint.name)


# -- a tiny MemSAM checkpoint ----------------------------------------------------------------------
@pytest.fixture(scope="session")
def tiny_memsam_checkpoint():
    """Random-weight MemSAM (`MemSAMConfig.tiny()`: small ViT, official memory widths) saved in
    the official layout with its ``.sha256`` record, as `memseg train-memsam` writes one. Random
    weights segment nothing in particular: tests check plumbing, geometry and metadata."""
    from random_weights import save_random_memsam

    return save_random_memsam(pathlib.Path(os.environ["MEMSEG_WEIGHTS_DIR"]) / "tiny_memsam_random.pth", tiny=True)


# -- headless Slicer -------------------------------------------------------------------------------------
def _headless_scene():
    """An MRML scene with the module logics the Slicer application would register
    (`MemSegLogic.mrml.headlessScene`), and the ``slicer.mrmlScene`` / ``slicer.app`` /
    ``slicer.modules`` that `slicer.util` expects, as the application sets them: stand-ins for
    the application object only (imported here so that a missing slicer-core only skips the tests
    that need it)."""
    from types import SimpleNamespace

    import slicer

    from MemSegLogic.mrml import headlessScene

    scene, app, logics = headlessScene()
    slicer.mrmlScene = scene
    slicer.app = SimpleNamespace(applicationLogic=lambda: app)
    slicer.modules = SimpleNamespace(**{name.lower(): SimpleNamespace(logic=(lambda logic=logic: logic))
                                        for name, logic in logics.items() if not name.startswith("_")})
    return scene, app, logics


@pytest.fixture
def slicer_scene():
    """A fresh headless MRML scene (slicer-core): real Slicer nodes, no Qt."""
    pytest.importorskip("slicer")
    scene, app, logics = _headless_scene()
    yield scene
    scene.Clear(1)


def run_slicer_replay(script_text: str, folder: pathlib.Path, timeout: int = 900) -> list:
    """Runs a replay of Slicer's loading (Testing/test_slicer_*.py) in a fresh interpreter, as
    Slicer starts one: the extension folder and the stand-ins' folder as its arguments, ``folder``
    as the working directory. Its printed lines; a failure shows the child's output."""
    import subprocess
    import textwrap

    script = folder / "replay.py"
    script.write_text(textwrap.dedent(script_text))
    completed = subprocess.run([sys.executable, str(script), str(REPO / "MemSegExtension"),
                                str(REPO / "Testing" / "slicer_api")], capture_output=True, text=True,
                               timeout=timeout, cwd=folder,
                               env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)})
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-6000:]
    return completed.stdout.splitlines()

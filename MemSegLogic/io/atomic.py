"""Writing a user-visible file without ever leaving it half-written.

Every writer goes through `replace_atomically`: the content goes to a sibling file that keeps
the target's suffix (readers such as SimpleITK choose the format by suffix), is flushed to
disk, then renamed over the target in one step (`os.replace`). A reader, a crash or a cancel
sees either the old file or the new one; the partial file is removed on any failure."""

from __future__ import annotations

import os
import pathlib
import shutil
import uuid
from typing import Callable

# Compound suffixes MemSeg writes; the temporary file keeps the whole of one so the writer picks
# the same format as for the target.
COMPOUND_SUFFIXES = (".seg.nrrd", ".seq.nrrd", ".seq.mrb", ".nii.gz")


def full_suffix(path: pathlib.Path) -> str:
    name = path.name.lower()
    for suffix in COMPOUND_SUFFIXES:
        if name.endswith(suffix):
            return path.name[-len(suffix):]
    return path.suffix


def partial_path(path: pathlib.Path) -> pathlib.Path:
    """A sibling of ``path``, unique to this write, with the same suffix and no other dot: MRML's
    writers name a bundle's contents after the file name up to its first dot."""
    suffix = full_suffix(path)
    stem = path.name[: len(path.name) - len(suffix)].replace(".", "_") or "output"
    return path.with_name(f"{stem}-partial-{uuid.uuid4().hex[:8]}{suffix}")


def replace_atomically(path, write: Callable[[pathlib.Path], object]) -> pathlib.Path:
    """Call ``write(partial)`` to produce the content, then move it over ``path`` atomically.
    ``write`` may create a file or (for a DICOM series) a folder."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(path)
    try:
        write(partial)
        if partial.is_file():
            with open(partial, "rb+") as stream:
                os.fsync(stream.fileno())
        if partial.is_dir() and path.is_dir():
            shutil.rmtree(path)  # a folder output (DICOM series) replaces the folder it names
        os.replace(partial, path)
    except BaseException:  # cancelled, interrupted, out of disk...: leave nothing half-written
        if partial.is_dir():
            shutil.rmtree(partial, ignore_errors=True)
        else:
            partial.unlink(missing_ok=True)
        raise
    return path

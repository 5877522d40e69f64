"""The rules every output path follows, checked before any work starts: a known file type, a
place that can be written, never one of the inputs, and an existing file replaced only when asked.
Text that goes into file headers (segment names) is cleaned of control characters first."""

from __future__ import annotations

import os
import pathlib
import re
from typing import Iterable, Sequence

from ..errors import MemSegError


class OutputError(MemSegError, ValueError):
    """An output path that cannot or must not be written."""


def _same_file(a: pathlib.Path, b: pathlib.Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output_path(path, suffixes: Sequence[str], inputs: Iterable = (), overwrite: bool = False,
                      what: str = "output") -> pathlib.Path:
    """``path`` as a Path if it may be written, else `OutputError` naming the problem.

    suffixes: the accepted endings (lower case, e.g. ".seg.nrrd"); inputs: files or folders the
    run reads, which an output must never replace (also through links); overwrite: allow
    replacing an existing file (never a folder)."""
    path = pathlib.Path(path).expanduser()
    name = path.name.lower()
    if not name.endswith(tuple(suffixes)):
        raise OutputError(f"the {what} {path.name!r} has an unsupported type: use one of {', '.join(suffixes)}")
    for source in inputs:
        source = pathlib.Path(source).expanduser()
        if _same_file(path, source) or path.resolve() == source.resolve():
            raise OutputError(f"the {what} {path} is the input {source}: MemSeg never overwrites its input; "
                              "choose another output name")
    if path.is_dir():
        raise OutputError(f"the {what} {path} is an existing folder: name a file")
    if path.exists() and not overwrite:
        raise OutputError(f"the {what} {path} exists already: choose another name, or allow replacing it "
                          "(CLI: --overwrite)")
    parent = _existing_ancestor(path.parent)
    if not parent.is_dir():
        raise OutputError(f"cannot write {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {path}: no permission to write in {parent}")
    return path


def _existing_ancestor(folder: pathlib.Path) -> pathlib.Path:
    """The nearest folder (or file in the way) that exists above an output: where it gets created."""
    folder = folder.absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def clean_text(text: str, what: str = "name") -> str:
    """``text`` with control characters (newlines, tabs...) replaced by spaces: file headers are
    line-based, and a newline would corrupt them. Empty after cleaning -> `OutputError`."""
    cleaned = " ".join(_CONTROL.sub(" ", str(text)).split())
    if not cleaned:
        raise OutputError(f"the {what} {text!r} is empty once control characters are removed")
    return cleaned

"""What earlier runs left in the output folder: for each case, the content key it was run with
and the SHA-256 of the output written, so a re-run knows which outputs are still current.

The state file is replaced atomically after every finished case: a run stopped at any point
(Ctrl-C, a crash) leaves a state that matches the outputs on disk."""

from __future__ import annotations

import json
import pathlib
from typing import Dict, Optional

from ..io.atomic import replace_atomically
from ..runtime.checkpoints import sha256_of

STATE_FILE = "memseg-batch-state.json"


class BatchState:
    def __init__(self, folder):
        self.path = pathlib.Path(folder) / STATE_FILE
        self.cases: Dict[str, dict] = {}
        if self.path.is_file():
            try:
                self.cases = dict(json.loads(self.path.read_text(encoding="utf-8")).get("cases", {}))
            except (ValueError, AttributeError):
                self.cases = {}  # unreadable state: every case is redone, nothing is lost

    def current(self, name: str, key: str, output: pathlib.Path) -> Optional[dict]:
        """The figures of ``name``'s earlier run if it ran with ``key`` and its output is still
        the file then written; else None (the case is to be run)."""
        entry = self.cases.get(name)
        if not entry or entry.get("key") != key or not output.is_file():
            return None
        return entry if sha256_of(output) == entry.get("output_sha256") else None

    def wrote(self, name: str) -> bool:
        """Whether an earlier run wrote ``name``'s output (which a redo may then replace)."""
        return name in self.cases

    def record(self, name: str, key: str, output: pathlib.Path, figures: dict) -> None:
        self.cases[name] = {"key": key, "output_sha256": sha256_of(output), **figures}
        text = json.dumps({"version": 1, "cases": self.cases}, indent=1)
        replace_atomically(self.path, lambda partial: partial.write_text(text, encoding="utf-8"))

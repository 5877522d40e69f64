"""The server's bearer token: made once, kept in a file only its user can read (0600)."""

from __future__ import annotations

import os
import pathlib
import secrets
from typing import Tuple

from ..errors import MemSegError

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def default_token_path() -> pathlib.Path:
    """``$XDG_CONFIG_HOME/memseg/server-token`` (``~/.config/...`` without it)."""
    config = os.environ.get("XDG_CONFIG_HOME") or pathlib.Path.home() / ".config"
    return pathlib.Path(config) / "memseg" / "server-token"


def load_or_create_token(path=None) -> Tuple[str, bool]:
    """(token, created): the file's token, or a new one written there readable by its owner only."""
    path = pathlib.Path(path or default_token_path()).expanduser()
    if path.is_file():
        if path.stat().st_mode & 0o077:
            raise MemSegError(f"the token file {path} is readable by other users: chmod 600 {path}, or delete it "
                              "to make a new token")
        token = path.read_text(encoding="ascii").strip()
        if len(token) < 16:
            raise MemSegError(f"the token file {path} holds no usable token (under 16 characters): delete it to "
                              "make a new one")
        return token, False
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    token = secrets.token_urlsafe(32)
    # O_EXCL with mode 0600: the file is never readable by others, not even for an instant.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as stream:
        stream.write(token + "\n")
    return token, True


def token_matches(given: str, expected: str) -> bool:
    return secrets.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))

"""The remote server (`memseg serve`, FastAPI + uvicorn: ``app``, ``jobs``) and its client
(`MemSegClient`: requests + SimpleITK, no torch), speaking the API of ``protocol``.

Importing this package or the client never imports FastAPI, uvicorn or torch."""

from .client import MemSegClient
from .protocol import API_VERSION, InvalidRequestError, ServerError, VersionMismatchError

__all__ = ["API_VERSION", "InvalidRequestError", "MemSegClient", "ServerError", "VersionMismatchError"]

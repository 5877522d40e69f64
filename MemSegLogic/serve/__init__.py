"""The remote server (`memseg serve`, FastAPI + uvicorn: ``app``, ``jobs``) and its client
(`MemSegClient`: requests + SimpleITK, no torch), speaking the API of ``protocol``.

Importing this package or the client never imports FastAPI, uvicorn or torch."""

from .client import RUN_HERE, RUN_ON_SERVER, MemSegClient, check_connection, describe_server, segmenter
from .protocol import API_VERSION, InvalidRequestError, ServerError, VersionMismatchError

__all__ = ["API_VERSION", "RUN_HERE", "RUN_ON_SERVER", "InvalidRequestError", "MemSegClient", "ServerError",
           "VersionMismatchError", "check_connection", "describe_server", "segmenter"]

"""Cohort runs: a manifest of cases (image + prompt + options) segmented on Ray — a local Ray
started on this machine by default, or any Ray cluster — with outputs written atomically, a
summary (CSV + JSON) and re-runs that skip the cases whose inputs have not changed.

Ray is an optional dependency (``pip install memseg[batch]``); the manifest, keys and summary
modules do not need it."""

from .manifest import Case, ManifestError, read_manifest
from .runner import BatchReport, run_batch

__all__ = ["BatchReport", "Case", "ManifestError", "read_manifest", "run_batch"]

"""Access to Meta's ``segment_anything.modeling`` without running ``segment_anything/__init__``.

The top-level ``segment_anything/__init__.py`` imports ``build_sam``/``predictor``/
``automatic_mask_generator``, and the latter pulls in ``torchvision``, which is not available
(or not ABI-compatible) with the CPU-only torch shipped for Slicer. The ``modeling`` subpackage
itself only needs ``torch`` and ``numpy`` (its ``__init__`` imports ``sam``, ``image_encoder``,
``mask_decoder``, ``prompt_encoder`` and ``transformer``, none of which import torchvision;
checked against segment-anything 1.0), so we import just that.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

_PACKAGE = "segment_anything"
_INSTALL_HINT = "pip install --no-deps segment-anything"


def sam_modeling() -> types.ModuleType:
    """Return the ``segment_anything.modeling`` module (PromptEncoder, MaskDecoder, ...).

    If ``segment_anything`` has not been imported yet, a bare package object pointing at the
    installed package directory is registered in ``sys.modules`` first, so that importing the
    ``modeling`` subpackage does not execute the package's own ``__init__.py``. If some other
    code already imported ``segment_anything`` (fully or as our bare stub), it is reused as is.

    Raises:
        ImportError: segment-anything is not installed.
    """
    if _PACKAGE not in sys.modules:
        # find_spec on a top-level name only locates the package; it does not execute it.
        spec = importlib.util.find_spec(_PACKAGE)
        if spec is None or spec.submodule_search_locations is None:
            raise ImportError(
                "The 'segment_anything' package (Meta's Segment Anything, needed for the "
                f"LiteMedSAM prompt encoder and mask decoder) is not installed. Install it with: "
                f"{_INSTALL_HINT}"
            )
        package = types.ModuleType(_PACKAGE)
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec
        package.__package__ = _PACKAGE
        package.__file__ = spec.origin
        # Deliberately not executing spec.loader: that is exactly the __init__ we must avoid.
        sys.modules[_PACKAGE] = package
    try:
        return importlib.import_module(f"{_PACKAGE}.modeling")
    except ModuleNotFoundError as exc:
        if exc.name is not None and exc.name.startswith(_PACKAGE):
            raise ImportError(
                f"'segment_anything.modeling' could not be imported ({exc}). "
                f"Reinstall it with: {_INSTALL_HINT}"
            ) from exc
        raise

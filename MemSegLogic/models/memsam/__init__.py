"""MemSAM (Deng et al., "MemSAM: Taming Segment Anything Model for Echocardiography Video
Segmentation", CVPR 2024), re-implemented for MemSeg.

Our own code, written from the MIT-licensed reference ``dengxl0520/MemSAM`` (which builds on
``xianlin7/SAMUS`` and ``hkchengrex/XMem``, both MIT). Module map:

* ``image_encoder.py``: SAMUS ViT encoder  <- ``modeling/image_encoder.py``, ``modeling/common.py``
* ``memory.py``: XMem-style memory         <- ``modeling/mem.py``, ``modeling/mem_modules.py``, ``modeling/resnet.py``
* ``model.py``: ``MemSAM``, builder, loaders <- ``modeling/memsam.py``, ``build_memsam.py``

(paths under ``models/segment_anything_memsam/`` of the reference). State-dict names equal the
official checkpoint's, except that the official duplicate ``memory.key_encoder.*`` entries
(the image encoder registered twice) are not registered; ``load_memsam`` drops them.
No trained MemSAM weights are published (reference issue #9).
"""

from .model import (
    MASK_THRESHOLD,
    MemoryDecodeResult,
    MemSAM,
    MemSAMConfig,
    SamInitReport,
    build_memsam,
    deep_update_schedule,
    init_from_sam,
    load_memsam,
    normalize_official_state_dict,
    official_state_dict,
    save_memsam,
)

__all__ = [
    "MASK_THRESHOLD",
    "MemSAM",
    "MemSAMConfig",
    "MemoryDecodeResult",
    "SamInitReport",
    "build_memsam",
    "deep_update_schedule",
    "init_from_sam",
    "load_memsam",
    "normalize_official_state_dict",
    "official_state_dict",
    "save_memsam",
]

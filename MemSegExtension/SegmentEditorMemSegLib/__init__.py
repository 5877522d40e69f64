from SegmentEditorEffects.AbstractScriptedSegmentEditorEffect import *  # noqa: F401,F403

from .SegmentEditorMedSAM2Effect import *  # noqa: F401,F403
from .SegmentEditorMemSAMEffect import *  # noqa: F401,F403

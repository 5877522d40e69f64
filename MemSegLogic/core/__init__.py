"""MemSeg's vocabulary: the `Volume` type, `Prompt`, voxel geometry, intensity presets, metrics.
Pure numpy; everything else in MemSegLogic builds on these."""

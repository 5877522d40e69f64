"""Neural network definitions used by MemSeg (LiteMedSAM and its building blocks)."""

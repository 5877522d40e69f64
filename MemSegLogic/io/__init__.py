"""Files in and out: volumes, cine loops, segmentations, and overlay pictures of results.

Every reader turns a file into MemSeg's types (`Volume`, `Cine`) with IJK->RAS exact; every
writer keeps it."""

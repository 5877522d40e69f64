"""What running a model needs around it: the checkpoint registry and weights files, devices,
the dependency installer's plan, and the background worker that keeps Slicer responsive."""

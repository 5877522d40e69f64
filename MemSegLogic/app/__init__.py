"""Entry points: the `memseg` command line, the demo, and the real sample data they use."""

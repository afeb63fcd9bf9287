"""Code shared by the pipeline's scripts: one place for each thing (decoding, weights, I/O, metrics)."""

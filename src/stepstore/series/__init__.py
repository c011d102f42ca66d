"""Scalar series storage: chunked columns with deltas, compression and per-chunk statistics."""

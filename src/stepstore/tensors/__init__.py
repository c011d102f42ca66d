"""Tensor series: chunked N-d arrays with steps as the leading axis, in Zarr v3 format."""

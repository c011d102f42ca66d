"""Import, export and copy of runs: CSV and Parquet files of scalars
(:mod:`stepstore.io.export`) and records (:mod:`stepstore.io.records`), one file per run
(:mod:`stepstore.io.project`), tensors as ``.npy`` files or Zarr stores
(:mod:`stepstore.io.tensors`), store-to-store copies (:mod:`stepstore.io.copy`)."""

from __future__ import annotations

from .copy import CopyResult, copy_runs
from .export import FORMATS, export_csv, export_parquet, export_runs
from .project import Written, export_each
from .records import RECORD_FORMATS, export_records
from .tensors import TENSOR_FORMATS, export_tensors

__all__ = [
    "FORMATS",
    "RECORD_FORMATS",
    "TENSOR_FORMATS",
    "CopyResult",
    "Written",
    "copy_runs",
    "export_csv",
    "export_each",
    "export_parquet",
    "export_records",
    "export_runs",
    "export_tensors",
]

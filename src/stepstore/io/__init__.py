"""Import, export and copy of runs: CSV and Parquet files (:mod:`stepstore.io.export`),
store-to-store copies (:mod:`stepstore.io.copy`)."""

from __future__ import annotations

from .copy import CopyResult, copy_runs
from .export import FORMATS, export_csv, export_parquet, export_runs

__all__ = ["FORMATS", "CopyResult", "copy_runs", "export_csv", "export_parquet", "export_runs"]

"""Import and export of runs: CSV and Parquet files (see :mod:`stepstore.io.export`)."""

from __future__ import annotations

from .export import FORMATS, export_csv, export_parquet, export_runs

__all__ = ["FORMATS", "export_csv", "export_parquet", "export_runs"]

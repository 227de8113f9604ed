"""``visionzoo.export``: the exporter, kept importable here; it lives in :mod:`visionzoo.deploy.export`."""
from __future__ import annotations

from .deploy.export import (DEFAULT_ATOL, DEFAULT_RTOL, FORMATS, ExportError, ExportParityError, ExportResult,
                            check_export, create_export_model, export_model, load_exported, run_exported)

__all__ = ["FORMATS", "DEFAULT_ATOL", "DEFAULT_RTOL", "ExportResult", "ExportError", "ExportParityError",
           "export_model", "create_export_model", "load_exported", "run_exported", "check_export"]

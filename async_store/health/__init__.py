"""Health: ``_report`` holds the report's types, ``probe`` gathers it from a running service,
``_prometheus`` renders it in the Prometheus text format."""

from .probe import CheckpointResult, DatabaseHealth, HealthReport

__all__ = ["CheckpointResult", "DatabaseHealth", "HealthReport"]

"""Run reports: per-version statistics and metrics, training curves, evolution strip, HTML page."""

from joindet.pipeline.report.build import ReportResult, build_report, ensure_metrics, loop_verdict
from joindet.pipeline.report.collect import ReportData, collect

__all__ = ["ReportData", "ReportResult", "build_report", "collect", "ensure_metrics", "loop_verdict"]

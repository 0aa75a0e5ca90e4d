"""Orchestration: Prefect flows and the joindet command line. The only importer of prefect and click."""

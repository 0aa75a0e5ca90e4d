"""Datasets, loading and transforms."""

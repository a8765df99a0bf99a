"""Serving plane (FastAPI scoring service). Not built yet: see the serving-plane issue.
The registry contract it will read is pipelines/registry.py (aliases and version tags)."""

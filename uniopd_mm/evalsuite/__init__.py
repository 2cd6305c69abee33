"""Benchmark evaluation: loaders for each benchmark's published schema, its metric, a resumable runner,
and reports (``eval/run.py``, ``eval/compare.py``)."""

"""The benchmarks (``python -m benchmarks.NAME``); nothing of the product imports them."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
"""The repository's root."""

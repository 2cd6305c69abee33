"""Offline difficulty-aware balancing (RECIPE 3a): uniopd_mm/offline_balance.py (its docstring has the options)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from uniopd_mm.offline_balance import main  # noqa: E402

if __name__ == "__main__":
    main()

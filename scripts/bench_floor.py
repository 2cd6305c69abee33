"""Every stage of a step against its library floor: uniopd_mm/bench/floor.py (its docstring has the options)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from uniopd_mm.bench.floor import cli  # noqa: E402

if __name__ == "__main__":
    cli()

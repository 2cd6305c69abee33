"""One OPD step against TRL's trainers: uniopd_mm/bench/step.py (its docstring has the options)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from uniopd_mm.bench.step import main  # noqa: E402

if __name__ == "__main__":
    main()

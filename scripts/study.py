"""Run a study (uniopd_mm/studies/): python scripts/study.py <main|ablation|blindspot|real-weights> [options]."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from uniopd_mm.studies import main  # noqa: E402

if __name__ == "__main__":
    main(sys.argv[1:])

"""The main job (`make run`): uniopd_mm/studies/main_job.py (its docstring has the stages and options)."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("FORCE_QWENVL_VIDEO_READER", "decord")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from uniopd_mm.studies.main_job import main  # noqa: E402

if __name__ == "__main__":
    main()

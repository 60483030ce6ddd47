"""``python -m bench``: run every benchmark (see ``bench/run_all.py``)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the scripts import _common & co.

from run_all import main

sys.exit(main())

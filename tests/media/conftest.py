"""The media torture set: small hostile inputs built at test time (see media_torture.py)."""

from __future__ import annotations

import sys
from pathlib import Path

# the shared writers of tests/unit (index-coded frames, tones) and this folder's own helpers
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

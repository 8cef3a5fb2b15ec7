"""The review tests use the shared fakes of tests/ (tagger_fakes) and small round shards."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

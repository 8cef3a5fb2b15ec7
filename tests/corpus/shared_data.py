"""The public data sets the corpus tests read (``../shared/data``, or ``$CEMR_DATA_DIR``)."""
from pathlib import Path

from cemr.config import data_dir

ROOT = Path(__file__).resolve().parents[2]


def real(*parts):
    """A path under the shared public data; a clear failure (not a skip) when it is missing."""
    base = Path(data_dir())
    path = (base if base.is_absolute() else ROOT / base).joinpath(*parts)
    assert path.exists(), (f"shared data not found at {path}: set CEMR_DATA_DIR to the public "
                           "data sets (see /work/shared/data/README.md)")
    return path

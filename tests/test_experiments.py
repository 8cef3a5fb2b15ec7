"""The shipped experiment configs measure honestly: every real-data experiment carves a dev split
(selection) and a test split (the reported figure) from gold train by patient record."""
from pathlib import Path

import pytest

from cemr.config import load_config

EXPERIMENTS = sorted((Path(__file__).resolve().parents[1] / "ray_configs" / "experiments").glob("*.yaml"))


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_every_experiment_has_a_dev_and_a_test_split(path):
    cfg = load_config(path)
    d = cfg.data
    assert d.dev or d.dev_fraction > 0, f"{path.name}: no dev split to select on"
    assert d.test or d.test_fraction > 0, f"{path.name}: no test split: its figure would be a dev figure"


def test_real_data_experiments_are_shipped():
    names = {p.stem for p in EXPERIMENTS}
    assert {"ccks2017", "ccks2017_lowres", "yidu_s4k", "yidu_s4k_lowres", "demo"} <= names

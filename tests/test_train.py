import math

import pandas as pd
import pytest

from hwnas.errors import HwnasError
from hwnas.spaces.genotype import DARTS_V2
from hwnas.train import TrainConfig, train_network


def test_epochs_zero_builds_and_counts_without_data():
    res = train_network(DARTS_V2, TrainConfig(dataset="cifar10", data_dir="/nonexistent", epochs=0, layers=20,
                                              channels=36, device="cpu"))
    assert res.params == 3_349_342 and math.isnan(res.test_acc) and res.metrics == []


def test_training_learns_digits_with_the_full_recipe(tmp_path):
    cfg = TrainConfig(epochs=4, layers=3, channels=8, batch_size=64, auxiliary=True, cutout=True,
                      drop_path_prob=0.2, device="cpu")
    seen = []
    res = train_network(DARTS_V2, cfg, out=tmp_path / "t", on_start=seen.append)
    assert seen == [res.params]
    assert res.test_acc > 0.5  # 10 classes: chance is 0.1
    metrics = pd.read_csv(tmp_path / "t" / "metrics.csv")
    assert list(metrics["epoch"]) == [1, 2, 3, 4] and (metrics["epoch_seconds"] > 0).all()
    assert metrics["lr"].is_monotonic_decreasing  # cosine schedule
    assert (tmp_path / "t" / "model.pt").is_file() and (tmp_path / "t" / "result.json").is_file()


def test_bad_train_config_is_a_clear_error():
    with pytest.raises(HwnasError, match="drop-path"):
        TrainConfig(drop_path_prob=1.5)

"""The training data generator (training/dataset.py): what the networks are trained on."""
import numpy as np
from training import dataset
from training.splits import REAL_TRAIN_TAKES


def test_training_takes_reach_the_tracker_at_the_rates_of_the_card():
    # Motion played faster or slower is resampled so that the tracker reports it at a rate
    # of dataset.RATES_HZ (source rates are whole multiples of 4 Hz: up to 11% of slack).
    from training.matrix import REAL
    takes = REAL_TRAIN_TAKES if REAL.is_dir() else ()
    rates, seconds = [], []
    for seed in range(1000, 1030):
        take = dataset.make_take(seed, takes)
        rates.append(1.0 / np.median(np.diff(take.t)))
        seconds.append(take.t[-1] - take.t[0])
    low, high = dataset.RATES_HZ
    assert 0.8 * low <= min(rates) and max(rates) <= 1.05 * high
    assert max(rates) / min(rates) > 3.0  # the range is used
    assert max(seconds) <= dataset.SECONDS

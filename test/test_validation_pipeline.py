import numpy as np
import pytest

from camstab_ros.core import make_smoother
from camstab_ros.core.pipeline import stabilize_take
from camstab_ros.core.validation import MeasurementValidator
from helpers import moving_take


def test_validator_drops_and_counts_each_bad_measurement():
    v = MeasurementValidator()
    assert v.check(0.0, [0, 0, 0], [0, 0, 0, 1])[0] is None
    assert v.check(0.1, [np.nan, 0, 0], [0, 0, 0, 1])[0] == 'non_finite'
    assert v.check(0.1, [0, 0, 0], [np.inf, 0, 0, 1])[0] == 'non_finite'
    assert v.check(0.1, [0, 0, 0], [0, 0, 0, 0])[0] == 'zero_quaternion'
    assert v.check(0.0, [0, 0, 0], [0, 0, 0, 1])[0] == 'stamp_not_increasing'
    assert v.check(-1.0, [0, 0, 0], [0, 0, 0, 1])[0] == 'stamp_not_increasing'
    reason, q = v.check(0.2, [0, 0, 0], [0, 0, 0, 3.0])
    assert reason is None and np.allclose(q, [0, 0, 0, 1]) and v.renormalized == 1
    assert dict(v.dropped) == {'non_finite': 2, 'zero_quaternion': 1,
                               'stamp_not_increasing': 2}


def test_invalid_rows_hold_the_previous_estimate_and_keep_one_output_per_input():
    t, _, _, p, q = moving_take(200, seed=1)
    p, q, t = p.copy(), q.copy(), t.copy()
    p[50] = np.nan
    q[80] = 0.0
    t[120] = t[119]                       # repeated stamp
    q[0] = np.nan                         # leading invalid row: takes the next estimate
    result = stabilize_take(make_smoother('one_euro'), t, p, q)
    assert len(result.p) == len(t)
    assert result.dropped == {'non_finite': 2, 'zero_quaternion': 1,
                              'stamp_not_increasing': 1}
    assert list(result.dropped_rows) == [0, 50, 80, 120]
    np.testing.assert_array_equal(result.p[50], result.p[49])
    np.testing.assert_array_equal(result.p[80], result.p[79])
    np.testing.assert_array_equal(result.p[120], result.p[119])
    np.testing.assert_array_equal(result.p[0], result.p[1])
    assert np.all(np.isfinite(result.p)) and np.all(np.isfinite(result.q))


def test_a_take_without_any_valid_pose_is_an_error():
    t = np.arange(5.0)
    with pytest.raises(ValueError, match='no valid pose.*5 non_finite'):
        stabilize_take(make_smoother('ema'), t, np.full((5, 3), np.nan),
                       np.tile([0, 0, 0, 1.0], (5, 1)))


def test_timed_run_records_one_cost_per_pose_and_equals_batch():
    t, _, _, p, q = moving_take(300, seed=2)
    timed = stabilize_take(make_smoother('one_euro'), t, p, q, timed=True)
    batch = stabilize_take(make_smoother('one_euro'), t, p, q)
    assert len(timed.us_per_update) == len(t) and np.all(timed.us_per_update > 0)
    np.testing.assert_allclose(timed.p, batch.p, atol=1e-12)

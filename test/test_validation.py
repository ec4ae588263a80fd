"""The gate between a raw pose and a smoother: what is dropped, what is renormalised."""
from camstab_ros.core.validation import MeasurementValidator
import numpy as np


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

from camstab_ros.core import quaternion as quat
import numpy as np
import pytest
from scipy.spatial.transform import Rotation


def random_quats(n, seed=0):
    return Rotation.random(n, random_state=seed).as_quat()


def test_normalize_scales_to_unit_and_rejects_zero_and_nan():
    q = quat.normalize([0.0, 0.0, 0.0, 2.0])
    np.testing.assert_allclose(q, [0, 0, 0, 1])
    with pytest.raises(ValueError, match='zero-length'):
        quat.normalize([0.0, 0.0, 0.0, 0.0])
    with pytest.raises(ValueError):
        quat.normalize([np.nan, 0.0, 0.0, 1.0])


def test_make_continuous_removes_sign_flips_without_changing_rotations():
    q = random_quats(1, 1)[0]
    steps = Rotation.from_rotvec(np.linspace(0, 0.5, 50)[:, None] * [0, 0, 1])
    seq = (Rotation.from_quat(q) * steps).as_quat()
    flipped = seq * np.where(np.arange(50) % 3 == 0, -1.0, 1.0)[:, None]
    cont = quat.make_continuous(flipped)
    assert np.all(np.sum(cont[1:] * cont[:-1], axis=1) > 0)
    np.testing.assert_allclose(quat.angle_between(cont, seq), 0.0, atol=1e-7)


def test_log_exp_round_trip_and_scipy_agreement():
    q = random_quats(100, 2)
    v = quat.log_map(q)
    back = quat.exp_map(v)
    np.testing.assert_allclose(quat.angle_between(back, q), 0.0, atol=1e-7)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1),
                               Rotation.from_quat(q).magnitude(), atol=1e-9)


def test_multiply_matches_scipy_composition():
    a, b = random_quats(20, 3), random_quats(20, 4)
    expected = (Rotation.from_quat(a) * Rotation.from_quat(b)).as_quat()
    np.testing.assert_allclose(quat.angle_between(quat.multiply(a, b), expected), 0.0,
                               atol=1e-7)


def test_slerp_interpolates_along_shortest_path_in_either_sign():
    a = Rotation.from_euler('z', 10, degrees=True).as_quat()
    b = Rotation.from_euler('z', 50, degrees=True).as_quat()
    for sign in (1.0, -1.0):
        mid = quat.slerp(a, sign * b, 0.25)
        assert np.degrees(quat.angle_between(mid, a)) == pytest.approx(10.0, abs=1e-9)
        assert np.degrees(quat.angle_between(mid, b)) == pytest.approx(30.0, abs=1e-9)


def test_angle_between_is_precise_for_tiny_angles():
    a = np.array([0.0, 0.0, 0.0, 1.0])
    b = Rotation.from_rotvec([1e-9, 0, 0]).as_quat()
    assert quat.angle_between(a, b) == pytest.approx(1e-9, rel=1e-6)
    assert quat.angle_between(a, -b) == pytest.approx(1e-9, rel=1e-6)


def test_float_quaternion_helpers_match_the_quaternion_module():
    rng = np.random.default_rng(7)
    a = quat.normalize(rng.normal(size=(50, 4)))
    b = quat.normalize(rng.normal(size=(50, 4)))
    vectors = np.concatenate([rng.normal(size=(48, 3)), [[0.0, 0.0, 0.0], [1e-12, 0.0, 0.0]]])
    for qa, qb, v in zip(a, b, vectors):
        expected = quat.log_map(quat.multiply(quat.conjugate(qa), qb))
        np.testing.assert_allclose(quat.log_relative(qa, qb), expected, rtol=0.0, atol=1e-12)
        composed = np.array(quat.compose_exp(qa, v))
        assert quat.angle_between(composed, quat.multiply(qa, quat.exp_map(v))) < 1e-12
        assert abs(np.linalg.norm(composed) - 1.0) < 1e-15

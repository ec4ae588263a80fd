"""Message <-> NumPy conversions (camstab_ros.nodes.conversions)."""
from builtin_interfaces.msg import Time
from camstab_ros.nodes import conversions as conv
from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped, TransformStamped
from nav_msgs.msg import Path
import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message


P = np.array([1.25, -0.5, 2.0])
Q = np.array([0.1, -0.2, 0.3, 0.9]) / np.linalg.norm([0.1, -0.2, 0.3, 0.9])


def test_stamp_round_trips_exactly_through_nanoseconds():
    stamp = Time(sec=1_795_480_000, nanosec=123_456_789)
    assert conv.stamp_to_ns(stamp) == 1_795_480_000_123_456_789
    back = conv.ns_to_stamp(conv.stamp_to_ns(stamp))
    assert (back.sec, back.nanosec) == (stamp.sec, stamp.nanosec)
    assert conv.stamp_to_sec(stamp) == pytest.approx(1_795_480_000.123456789, abs=1e-6)


def test_sec_to_stamp_rounds_to_the_nearest_nanosecond():
    stamp = conv.sec_to_stamp(12.3456789994)
    assert (stamp.sec, stamp.nanosec) == (12, 345_678_999)
    stamp = conv.sec_to_stamp(1.9999999999)
    assert (stamp.sec, stamp.nanosec) == (2, 0)


def test_pose_stamped_round_trip_keeps_stamp_frame_and_values():
    stamp = Time(sec=5, nanosec=7)
    msg = conv.make_pose_stamped(stamp, 'world', P, Q)
    assert msg.header.frame_id == 'world'
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (5, 7)
    assert msg.header.stamp is not stamp  # copied: the caller's stamp is not shared
    wire = deserialize_message(serialize_message(msg), PoseStamped)
    t, p, q = conv.pose_stamped_to_arrays(wire)
    assert t == pytest.approx(5.000000007)
    np.testing.assert_array_equal(p, P)
    np.testing.assert_array_equal(q, Q)


def test_pose_with_covariance_is_row_major_6x6():
    cov = np.arange(36, dtype=float).reshape(6, 6)
    msg = conv.make_pose_with_covariance_stamped(Time(sec=1), 'map', P, Q, cov)
    assert msg.pose.covariance[1] == 1.0 and msg.pose.covariance[6] == 6.0
    wire = deserialize_message(serialize_message(msg), PoseWithCovarianceStamped)
    t, p, q, back = conv.pose_with_covariance_to_arrays(wire)
    np.testing.assert_array_equal(back, cov)
    np.testing.assert_array_equal(p, P)


def test_covariance_of_the_wrong_shape_is_a_clear_error():
    with pytest.raises(ValueError, match='6x6'):
        conv.make_pose_with_covariance_stamped(Time(), 'map', P, Q, np.eye(3))


def test_transform_stamped_round_trip():
    msg = conv.make_transform_stamped(Time(sec=3), 'world', 'camera', P, Q)
    assert msg.child_frame_id == 'camera'
    wire = deserialize_message(serialize_message(msg), TransformStamped)
    t, p, q = conv.transform_stamped_to_arrays(wire)
    assert t == 3.0
    np.testing.assert_array_equal(p, P)
    np.testing.assert_array_equal(q, Q)


def test_path_round_trip_and_empty_path():
    t = np.array([1.0, 1.5, 2.25])
    p = np.stack([P, P + 1, P + 2])
    q = np.stack([Q, Q, Q])
    msg = conv.arrays_to_path(t, 'world', p, q)
    assert msg.header.stamp.sec == 2 and msg.header.stamp.nanosec == 250_000_000
    wire = deserialize_message(serialize_message(msg), Path)
    t2, p2, q2 = conv.path_to_arrays(wire)
    np.testing.assert_array_equal(t2, t)
    np.testing.assert_array_equal(p2, p)
    np.testing.assert_array_equal(q2, q)
    t3, p3, q3 = conv.path_to_arrays(conv.arrays_to_path([], 'world', [], []))
    assert t3.shape == (0,) and p3.shape == (0, 3) and q3.shape == (0, 4)

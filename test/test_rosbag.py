"""rosbag2 writing and reading through `rosbags` (camstab_ros.io.rosbag)."""
from camstab_ros.io import rosbag
from camstab_ros.nodes.conversions import make_pose_stamped, ns_to_stamp
from geometry_msgs.msg import PoseStamped
import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message


P = np.array([0.5, -1.0, 1.5])
Q = np.array([0.0, 0.0, np.sin(0.2), np.cos(0.2)])


def _rclpy_pose(ns, offset=0.0):
    return make_pose_stamped(ns_to_stamp(ns), 'world', P + offset, Q)


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_raw_cdr_from_rclpy_and_typestore_messages_round_trip(tmp_path, storage):
    path = tmp_path / 'bag'
    raw = serialize_message(_rclpy_pose(1_000_000_007))
    typed = rosbag.pose_stamped(2_000_000_000, 'world', P + 1.0, Q)
    count = rosbag.write_bag(path, {'/a': rosbag.POSE_STAMPED, '/b': rosbag.POSE_STAMPED},
                             [('/a', 10, raw), ('/b', 20, typed)], storage)
    assert count == 2
    assert rosbag.bag_topics(path) == {'/a': rosbag.POSE_STAMPED, '/b': rosbag.POSE_STAMPED}
    messages = list(rosbag.read_bag(path))
    assert [(m.topic, m.timestamp_ns) for m in messages] == [('/a', 10), ('/b', 20)]
    first = messages[0].data
    assert (first.header.stamp.sec, first.header.stamp.nanosec) == (1, 7)
    assert first.pose.position.x == P[0]
    # Raw bytes written by rosbags decode equal in rclpy (CDR padding may differ).
    raw_b = next(rosbag.read_bag(path, ['/b'], decode=False)).data
    decoded = deserialize_message(raw_b, PoseStamped)
    assert decoded.pose.position.z == P[2] + 1.0
    assert decoded.header.stamp.sec == 2


def test_read_poses_returns_arrays_by_header_stamp(tmp_path):
    path = tmp_path / 'bag'
    t = np.array([1.0, 1.25, 1.5])
    p = np.stack([P, P + 0.1, P + 0.2])
    q = np.stack([Q, Q, Q])
    assert rosbag.write_poses(path, {'/cam': (t, p, q)}, 'stage', storage='sqlite3') == 3
    t2, p2, q2, frame = rosbag.read_poses(path, '/cam')
    np.testing.assert_allclose(t2, t)
    np.testing.assert_array_equal(p2, p)
    np.testing.assert_array_equal(q2, q)
    assert frame == 'stage'


def test_existing_bag_is_not_overwritten(tmp_path):
    path = tmp_path / 'bag'
    rosbag.write_bag(path, {'/a': rosbag.POSE_STAMPED}, [])
    with pytest.raises(FileExistsError, match='already exists'):
        rosbag.BagWriter(path)


def test_bad_storage_type_and_topic_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match='unknown bag storage'):
        rosbag.BagWriter(tmp_path / 'x', storage='zip')
    with rosbag.BagWriter(tmp_path / 'bag') as bag:
        with pytest.raises(ValueError, match='unknown message type'):
            bag.add_topic('/a', 'nope_msgs/msg/Nothing')
        bag.add_topic('/a', rosbag.POSE_STAMPED)
        with pytest.raises(ValueError, match='already has type'):
            bag.add_topic('/a', 'std_msgs/msg/String')
        with pytest.raises(ValueError, match='not added'):
            bag.write('/b', 0, b'')
    with pytest.raises(KeyError, match='no topic /b'):
        list(rosbag.read_bag(tmp_path / 'bag', ['/b']))


def test_read_poses_rejects_a_non_pose_topic(tmp_path):
    path = tmp_path / 'bag'
    string = rosbag.typestore().types['std_msgs/msg/String'](data='hello')
    rosbag.write_bag(path, {'/s': 'std_msgs/msg/String'}, [('/s', 1, string)])
    with pytest.raises(ValueError, match='cannot read poses from std_msgs/msg/String'):
        rosbag.read_poses(path, '/s')


@pytest.mark.parametrize('compat, version, qos_type',
                         [('jazzy', 9, list), ('humble', 8, str)])
def test_a_bag_for_humble_stores_qos_profiles_as_the_string_humble_parses(
        tmp_path, compat, version, qos_type):
    import yaml
    path = tmp_path / 'bag'
    with rosbag.BagWriter(path, 'mcap', rosbag.BAG_VERSIONS[compat]) as bag:
        bag.add_topic('/a', rosbag.POSE_STAMPED)
        bag.write('/a', 5, serialize_message(_rclpy_pose(5)))
    info = yaml.safe_load((path / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    assert info['version'] == version
    topic = info['topics_with_message_count'][0]['topic_metadata']
    assert isinstance(topic['offered_qos_profiles'], qos_type)
    assert [m.timestamp_ns for m in rosbag.read_bag(path)] == [5]

"""`camstab bag record|play|info` over real DDS and `smooth_bag` on real bag files."""
from pathlib import Path
import shutil
import subprocess
import sys
import threading
import time

from camstab_ros.io import rosbag
from camstab_ros.nodes.conversions import make_pose_stamped, ns_to_stamp
from camstab_ros.tools.bag_tools import bag_info, BagError, record, smooth_bag
from geometry_msgs.msg import PoseStamped
import numpy as np
import pytest
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor


ROOT = Path(__file__).resolve().parents[1]
COUNT = 60


def _pose(k):
    return make_pose_stamped(ns_to_stamp(1_000_000_000 + k * 10_000_000), 'world',
                             [0.01 * k, 1.0, 1.5], [0.0, 0.0, np.sin(0.001 * k),
                                                    np.cos(0.001 * k)])


def _same(a, b):
    return (a.header.stamp.sec, a.header.stamp.nanosec, a.header.frame_id,
            a.pose.position.x, a.pose.position.y, a.pose.position.z, a.pose.orientation.z,
            a.pose.orientation.w) == (
        b.header.stamp.sec, b.header.stamp.nanosec, b.header.frame_id,
        b.pose.position.x, b.pose.position.y, b.pose.position.z, b.pose.orientation.z,
        b.pose.orientation.w)


@pytest.fixture
def ros(ros_domain, monkeypatch):
    """Yield a spun rclpy context on a private domain (also used by record() via the env)."""
    monkeypatch.setenv('ROS_DOMAIN_ID', str(ros_domain.domain_id))
    context = Context()
    rclpy.init(context=context, domain_id=ros_domain.domain_id)
    executor = SingleThreadedExecutor(context=context)
    node = rclpy.create_node('bag_test', context=context)
    executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    yield node, ros_domain.env()
    executor.shutdown()
    thread.join(5)
    node.destroy_node()
    rclpy.try_shutdown(context=context)


def test_recorded_live_topic_plays_back_intact(ros, tmp_path):
    node, env = ros
    pub = node.create_publisher(PoseStamped, '/camera/pose', 10)
    sent = [_pose(k) for k in range(COUNT)]
    progress = {'next': 0}

    def publish_when_recording():
        while progress['next'] < COUNT:
            if pub.get_subscription_count():
                pub.publish(sent[progress['next']])
                progress['next'] += 1
            time.sleep(0.01)
    publisher = threading.Thread(target=publish_when_recording, daemon=True)
    publisher.start()
    bag = tmp_path / 'take'
    counts = record(bag, ['/camera/pose'], count=COUNT, duration=20.0)
    publisher.join(5)
    assert counts == {'/camera/pose': COUNT}
    recorded = [m.data for m in rosbag.read_bag(bag)]
    assert all(_same(a, b) for a, b in zip(sent, recorded)) and len(recorded) == COUNT

    received = []
    node.create_subscription(PoseStamped, '/camera/pose', received.append, 100)
    proc = subprocess.run(
        [sys.executable, '-m', 'camstab_ros.cli', 'bag', 'play', str(bag), '--rate-factor',
         '5', '--wait-subscribers', '10'], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    deadline = time.monotonic() + 5
    while len(received) < COUNT and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(received) == COUNT
    assert all(_same(a, b) for a, b in zip(sent, received))


def _write_take(path, storage='mcap', n=300):
    t = 100.0 + np.arange(n) / 100.0
    rng = np.random.default_rng(1)
    p = np.stack([np.sin(t), np.cos(t), 1.5 + 0 * t], axis=1) + rng.normal(0, 1e-3, (n, 3))
    q = np.tile([0.0, 0.0, 0.0, 1.0], (n, 1))
    types = {'/cam/pose': rosbag.POSE_STAMPED, '/other': rosbag.POSE_STAMPED}
    records = []
    for i in range(n):
        ns = round(t[i] * 1e9)
        records.append(('/cam/pose', ns, rosbag.pose_stamped(ns, 'world', p[i], q[i])))
        if i % 10 == 0:
            records.append(('/other', ns + 1, rosbag.pose_stamped(ns, 'map', p[i], q[i])))
    rosbag.write_bag(path, types, records, storage)
    return p


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_smooth_bag_adds_the_stabilized_topic_and_keeps_the_rest(tmp_path, storage):
    raw = _write_take(tmp_path / 'in', storage)
    summary = smooth_bag(tmp_path / 'in', tmp_path / 'out', '/cam/pose', 'rts', {})
    info = bag_info(tmp_path / 'out')
    assert {k: v['count'] for k, v in info['topics'].items()} == {
        '/cam/pose': 300, '/other': 30, '/cam/pose_stabilized': 300}
    assert summary['poses'] == 300 and summary['stabilized_topic'] == '/cam/pose_stabilized'
    t, p, _, frame_id = rosbag.read_poses(tmp_path / 'out', '/cam/pose_stabilized')
    t_in, p_in, _, _ = rosbag.read_poses(tmp_path / 'out', '/cam/pose')
    assert frame_id == 'world' and np.array_equal(t, t_in)
    np.testing.assert_array_equal(p_in, raw)
    truth = np.stack([np.sin(t), np.cos(t), 1.5 + 0 * t], axis=1)
    assert np.sqrt(np.mean((p - truth) ** 2)) < np.sqrt(np.mean((raw - truth) ** 2))


def test_truncated_or_corrupt_bag_gives_a_clear_error_and_writes_nothing(tmp_path):
    _write_take(tmp_path / 'in', 'mcap')
    mcap = next((tmp_path / 'in').glob('*.mcap'))
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 2])
    with pytest.raises(BagError, match='cannot read bag'):
        smooth_bag(tmp_path / 'in', tmp_path / 'out', '/cam/pose', 'rts', {})
    assert not (tmp_path / 'out').exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ['in']
    (tmp_path / 'junk').mkdir()
    (tmp_path / 'junk' / 'metadata.yaml').write_text('not: a bag\n')
    proc = subprocess.run([sys.executable, '-m', 'camstab_ros.cli', 'bag', 'info',
                           str(tmp_path / 'junk')], cwd=ROOT, capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 2 and 'cannot read bag' in proc.stderr


def test_smooth_bag_rejects_unknown_topic_and_bad_parameters(tmp_path):
    _write_take(tmp_path / 'in', 'mcap', n=20)
    with pytest.raises(BagError, match='has no topic /nope'):
        smooth_bag(tmp_path / 'in', tmp_path / 'out', '/nope', 'rts', {})
    with pytest.raises(BagError, match='cannot smooth'):
        smooth_bag(tmp_path / 'in', tmp_path / 'out', '/cam/pose', 'kalman', {'bogus': 1})
    assert not (tmp_path / 'out').exists()


def test_camstab_smooth_and_bag_info_commands_on_a_bag(tmp_path):
    _write_take(tmp_path / 'in', 'mcap')

    def camstab(*args):
        return subprocess.run([sys.executable, '-m', 'camstab_ros.cli', *map(str, args)],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
    done = camstab('smooth', '--method', 'rts', '--topic', '/cam/pose', tmp_path / 'in',
                   tmp_path / 'out')
    assert done.returncode == 0, done.stderr
    assert '300 poses of /cam/pose -> /cam/pose_stabilized' in done.stdout
    info = camstab('bag', 'info', tmp_path / 'out')
    assert info.returncode == 0, info.stderr
    assert '/cam/pose_stabilized' in info.stdout and '/other' in info.stdout
    missing = camstab('smooth', tmp_path / 'in', tmp_path / 'out2')
    assert missing.returncode == 2 and 'needs --topic' in missing.stderr
    assert not (tmp_path / 'out2').exists()


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_mutated_bags_give_a_bag_error_or_validated_poses(tmp_path, storage):
    # Random bytes flipped in the storage file: every outcome is a BagError naming the
    # bag, or a smoothed bag whose poses stayed within reach of the valid input.
    _write_take(tmp_path / 'clean', storage, n=60)
    data_file = next(f for f in (tmp_path / 'clean').iterdir()
                     if f.suffix in ('.mcap', '.db3'))
    original = data_file.read_bytes()
    rng = np.random.default_rng(5)
    outcomes = {'error': 0, 'read': 0}
    for k in range(40):
        bag = tmp_path / f'mutant{k}'
        shutil.copytree(tmp_path / 'clean', bag)
        mutated = bytearray(original)
        for index in rng.integers(0, len(mutated), 8):
            mutated[index] = int(rng.integers(0, 256))
        (bag / data_file.name).write_bytes(bytes(mutated))
        try:
            smooth_bag(bag, tmp_path / f'out{k}', '/cam/pose', 'kalman', {})
        except BagError as exc:
            assert str(bag) in str(exc)
            assert not (tmp_path / f'out{k}').exists()
            outcomes['error'] += 1
            continue
        outcomes['read'] += 1
        _, p, _, _ = rosbag.read_poses(tmp_path / f'out{k}', '/cam/pose_stabilized')
        assert np.all(np.isfinite(p)) and np.max(np.abs(p)) <= 1e4
    assert outcomes['error'] > 0, outcomes

"""
Tests of the installed nodes against a hostile tracker, over real DDS and UDP.

Each hostile sequence is followed by good input: the node must still be alive, its output
must resume within 1 s, and /diagnostics must account for every pose it received
(received = published + pending + dropped, by reason).
"""
import socket
import time

from camstab_ros.io import freed
from camstab_ros.nodes.conversions import make_pose_stamped, pose_stamped_to_arrays, sec_to_stamp
from camstab_ros.share import share_dir
from camstab_ros.tools.processes import node_command, ros_arguments
from geometry_msgs.msg import PoseStamped
import numpy as np
import pytest
from ros_helpers import Observer, start, stop


PARAMS_FILE = share_dir() / 'config' / 'params.yaml'
POSE_IN, POSE_OUT, NODE = '/hostile/pose_in', '/hostile/pose_out', 'hostile_stabilizer'
RATE_HZ = 100.0
IDENTITY = (0.0, 0.0, 0.0, 1.0)


@pytest.fixture(scope='module')
def stage(module_ros_domain, tmp_path_factory):
    """Start a `stabilizer` (kalman) and an observer feeding it; yield (observer, process)."""
    logs = tmp_path_factory.mktemp('hostile')
    proc = start(node_command('stabilizer') + ros_arguments(
        PARAMS_FILE, {'method': 'kalman', 'publish_tf': 'false'},
        {'pose_in': POSE_IN, 'pose_out': POSE_OUT, '__node': NODE}),
        module_ros_domain.env(), logs / f'{NODE}.log')
    observer = Observer(module_ros_domain.domain_id, (POSE_OUT,))
    observer.publisher = observer.node.create_publisher(PoseStamped, POSE_IN, 10)
    try:
        probe = 0
        while not observer.poses[POSE_OUT]:  # discovery: the first messages can be lost
            assert probe < 300, 'the stabiliser never answered'
            send(observer, [pose(time.time())])
            probe += 1
        observer.spin_for(1.0)  # longer than dropout_timeout_s: a clean start
        yield observer, proc
    finally:
        observer.close()
        stop(proc)


def pose(t, position=(1.0, 2.0, 1.5), quaternion=IDENTITY, frame='world'):
    return make_pose_stamped(sec_to_stamp(t), frame, position, quaternion)


def send(observer, messages, period=1.0 / RATE_HZ):
    for msg in messages:
        observer.publisher.publish(msg)
        observer.spin_for(period)


def good_input_resumes(observer, proc, seconds=1.5):
    """Send good live poses; return how long after the first one the output resumed."""
    outputs = observer.poses[POSE_OUT]
    before = len(outputs)
    first = time.time()
    for k in range(int(seconds * RATE_HZ)):
        send(observer, [pose(time.time(), position=(1.0 + 0.001 * k, 2.0, 1.5))])
    observer.spin_for(0.2)
    assert proc.poll() is None, proc.log_path.read_text()
    fresh = [pose_stamped_to_arrays(m)[0] for m in outputs[before:]]
    assert fresh, 'no output after good input'
    return min(t for t in fresh if t >= first) - first


def assert_accounted(observer):
    observer.spin_for(1.2)  # the stream is idle: nothing pending
    values = observer.fresh_diagnostics_of(NODE)
    received, published = int(values['received']), int(values['published'])
    dropped, pending = int(values['dropped_invalid']), int(values['pending'])
    assert received == published + pending + dropped, values
    return values


HOSTILE = {
    'overflowing quaternions': lambda now: [
        pose(now, quaternion=(1e200, 0.0, 0.0, 0.0)),
        pose(now + 0.01, quaternion=(1e300, 0.0, 0.0, 1e300))],
    'a stamp 1e6 s in the future': lambda now: [pose(now + 1e6)],
    'absurd positions': lambda now: [pose(now + 0.01 * k, position=(1e300, 0.0, 0.0))
                                     for k in range(5)],
    'a frame nobody uses, first': lambda now: [pose(now, frame='evil_frame')],
    'the clock stepping back 100 s': lambda now: [pose(now - 100.0 + 0.01 * k)
                                                  for k in range(20)],
}


@pytest.mark.parametrize('name', HOSTILE)
def test_the_node_survives_and_resumes_within_a_second(stage, name):
    observer, proc = stage
    observer.spin_for(1.2)  # a pause first: the frame lock and the stamps start afresh
    send(observer, HOSTILE[name](time.time()))
    delay = good_input_resumes(observer, proc)
    assert delay < 1.0, f'{name}: output resumed {delay:.2f} s after good input'
    assert_accounted(observer)


def test_diagnostics_count_every_hostile_pose_by_reason(stage):
    observer, _ = stage
    values = assert_accounted(observer)
    assert int(values['dropped.out_of_workspace']) >= 5
    assert int(values['dropped.stamp_in_future']) >= 1
    assert int(values['dropped.smoother_error']) == 0
    assert int(values['renormalized']) >= 2
    assert values['tracker_noise'].endswith(' deg')  # the meter reads the live stream


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def test_the_bridge_stays_within_reach_after_random_valid_packets(module_ros_domain,
                                                                  tmp_path):
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(('127.0.0.1', 0))
    listener.settimeout(0.2)
    port = free_port()
    bridge = start(node_command('freed_bridge') + [
        '--ros-args', '-p', 'bind_address:=127.0.0.1', '-p', f'port:={port}',
        '-p', f'destination:=127.0.0.1:{listener.getsockname()[1]}'],
        module_ros_domain.env(), tmp_path / 'bridge.log')
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rng = np.random.default_rng(3)
    received = []

    def send_and_collect(packet):
        sender.sendto(freed.encode(packet), ('127.0.0.1', port))
        time.sleep(1.0 / RATE_HZ)
        try:
            while True:
                received.append(freed.decode(listener.recv(64)))
        except socket.timeout:
            pass
        except BlockingIOError:
            pass

    try:
        listener.settimeout(0.0)
        deadline = time.monotonic() + 30.0
        while not received:  # start-up of the bridge
            assert time.monotonic() < deadline, bridge.log_path.read_text()
            send_and_collect(freed.FreeDPacket(1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0, 0))
        for k in range(150):  # random valid-checksum packets anywhere in FreeD's range
            x, y, z = rng.uniform(-100.0, 100.0, 3)  # m
            pan, tilt, roll = rng.uniform(-170.0, 170.0, 3)
            send_and_collect(freed.FreeDPacket(1, pan, tilt, roll, x, y, z, 0, 0, 60000 + k))
        received.clear()
        for k in range(150):  # a real camera again, moving slowly; spare = its index
            send_and_collect(freed.FreeDPacket(1, 10.0, 0.0, 0.0, 2.0 + 0.001 * k, 1.0, 1.5,
                                               0, 0, k))
        time.sleep(0.3)
        send_and_collect(freed.FreeDPacket(1, 10.0, 0.0, 0.0, 2.15, 1.0, 1.5, 0, 0, 150))
    finally:
        sender.close()
        listener.close()
        code = stop(bridge)
    assert code == 0, bridge.log_path.read_text()
    good = [p for p in received if p.spare < 1000]
    assert len(good) > 140
    # Within a few frames of good input the output is back on the measurements.
    late = [p for p in good if p.spare >= 10]
    assert max(abs(p.x_m - (2.0 + 0.001 * p.spare)) for p in late) < 0.25

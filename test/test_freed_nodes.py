"""freed_receiver -> DDS -> freed_sender, with real UDP on 127.0.0.1 and real rclpy."""
import socket
import threading
import time

from camstab_ros.io import freed
from camstab_ros.io.tracking_udp import TimeBase
from camstab_ros.nodes.tracking_receiver import FreedReceiverNode
from camstab_ros.nodes.tracking_sender import FreedSenderNode
from diagnostic_msgs.msg import DiagnosticArray
import pytest
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter


@pytest.fixture
def ros(ros_domain):
    """(context, executor spinning in a thread); everything shut down at teardown."""
    context = Context()
    rclpy.init(context=context, domain_id=ros_domain.domain_id)
    executor = SingleThreadedExecutor(context=context)
    nodes = []
    thread = threading.Thread(target=executor.spin, daemon=True)

    def add(node):
        nodes.append(node)
        executor.add_node(node)
        return node

    thread.start()
    yield context, add
    executor.shutdown()
    thread.join(5)
    for node in nodes:
        node.destroy_node()
    rclpy.try_shutdown(context=context)


def wait_until(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_receiver_to_sender_passes_pose_and_lens_and_counts_malformed(ros):
    context, add = ros
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    out.bind(('127.0.0.1', 0))
    out.settimeout(2.0)
    receiver = add(FreedReceiverNode(context=context, parameter_overrides=[
        Parameter('bind_address', value='127.0.0.1'), Parameter('port', value=0)]))
    add(FreedSenderNode(
        context=context,
        cli_args=['--ros-args', '-r', 'pose_in:=pose_out', '-r', 'lens_in:=lens_out'],
        parameter_overrides=[
            Parameter('destination', value=f'127.0.0.1:{out.getsockname()[1]}')]))
    diagnostics = []
    probe = add(rclpy.create_node('probe', context=context))
    probe.create_subscription(DiagnosticArray, '/diagnostics', diagnostics.append, 10)
    assert wait_until(lambda: receiver.count_subscribers('pose_out') >= 1
                      and receiver.count_subscribers('lens_out') >= 1)

    packets = [freed.FreeDPacket(3, 10.0 + i, -5.0, 0.5, 1.0, 2.0 + 0.01 * i, 1.5,
                                 1000 + i, 2000 + i, 7) for i in range(20)]
    good = [freed.encode(p) for p in packets]
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    bad = [good[0][:28], b'\xd2' + good[0][1:], good[0][:-1] + bytes([good[0][-1] ^ 1])]
    for data in bad:
        tx.sendto(data, receiver.address)
    got = []
    for data in good:  # one at a time: lens values ride on a separate topic
        tx.sendto(data, receiver.address)
        got.append(freed.decode(out.recv(100)))
        time.sleep(0.01)
    tx.close()
    out.close()
    for sent, back in zip(packets[1:], got[1:]):
        assert abs(back.pan_deg - sent.pan_deg) < 1e-3
        assert abs(back.y_m - sent.y_m) < 1e-4
        assert (back.zoom, back.focus, back.spare) == (sent.zoom, sent.focus, sent.spare)
    assert len(got) == len(good)

    def receiver_counts():
        for array in reversed(diagnostics):
            for status in array.status:
                if status.name.startswith('/freed_receiver:'):
                    assert status.hardware_id.startswith('udp://')  # the tracker source
                    return {kv.key: kv.value for kv in status.values}
        return None
    assert wait_until(lambda: (receiver_counts() or {}).get('published') == '20', 3.0)
    counts = receiver_counts()
    assert (counts['dropped.wrong_length'], counts['dropped.wrong_type'],
            counts['dropped.bad_checksum'], counts['received']) == ('1', '1', '1', '23')


def test_sender_counts_poses_it_cannot_encode(ros):
    context, add = ros
    sender = add(FreedSenderNode(context=context, parameter_overrides=[
        Parameter('destination', value='127.0.0.1:9')]))
    assert sender._output.send([500.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]) is False
    assert sender._output.send([1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]) is True
    assert sender._output.dropped['not_encodable'] == 1


def test_time_base_frame_clock_is_jitter_free_and_always_increasing():
    base = TimeBase(100.0)
    arrivals = [10.0 + k / 100.0 + (0.003 if k % 2 else 0.0) for k in range(50)]
    stamps = [base.stamp(a) for a in arrivals]
    assert stamps == pytest.approx([10.0 + k / 100.0 for k in range(50)])
    fast = [base.stamp(11.0 + k * 1e-4) for k in range(200)]  # a sender far above 100 Hz
    assert all(b > a for a, b in zip(stamps + fast, (stamps + fast)[1:]))
    assert base.resyncs > 0

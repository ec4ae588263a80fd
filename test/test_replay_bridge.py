"""`camstab replay` -> `freed_bridge` -> a UDP listener, over real UDP on 127.0.0.1."""
import json
from pathlib import Path
import queue
import socket
import subprocess
import sys
import threading
import time

from camstab_ros.core import quaternion as quat
from camstab_ros.io import freed
from camstab_ros.io.mosys_f4 import f4_to_freed, f4_to_pose, read_f4
from camstab_ros.io.udp import UdpReceiver
from camstab_ros.tools.processes import node_command
from camstab_ros.tools.replay import load_frames, replay, ReplayError
import numpy as np
import pytest


ROOT = Path(__file__).resolve().parents[1]
F4_TAKE = ROOT.parent / 'shared' / 'data' / 'real' / 'mosys_startracker_A003_C001_01.f4'
TUM_TAKE = ROOT.parent / 'shared' / 'data' / 'real' / 'tum_fr1_xyz_groundtruth.txt'
needs_data = pytest.mark.skipif(not F4_TAKE.is_file(),
                                reason='../shared/data is absent (real recordings)')


def listener():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(('127.0.0.1', 0))
    sock.settimeout(0.2)
    return sock


def receive(sock, count, timeout):
    """Datagrams until count arrived or nothing came for `timeout` seconds."""
    got = []
    last = time.monotonic()
    while len(got) < count and time.monotonic() - last < timeout:
        try:
            got.append(sock.recv(65535))
            last = time.monotonic()
        except socket.timeout:
            pass
    return got


class Process:
    """A child process whose stderr lines are collected by a thread."""

    def __init__(self, args, env):
        self.proc = subprocess.Popen(args, cwd=ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        self.lines = queue.Queue()
        self.output = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        for line in self.proc.stdout:
            self.output.append(line)
            self.lines.put(line)

    def wait_for(self, text, timeout=20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            if text in line:
                return line
        raise AssertionError(f'{text!r} not printed; output:\n' + ''.join(self.output))

    def wait(self, timeout=20.0):
        self.proc.wait(timeout)
        self._thread.join(5)
        return self.proc.returncode

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(2)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._thread.join(5)
        return self.proc.returncode


def start_bridge(env, destination_port, *params):
    args = node_command('freed_bridge') + [
        '--ros-args', '-p', 'bind_address:=127.0.0.1', '-p', 'port:=0',
        '-p', f'destination:=127.0.0.1:{destination_port}']
    for param in params:
        args += ['-p', param]
    bridge = Process(args, env)
    line = bridge.wait_for('bridging FreeD udp')
    port = int(line.split('udp 127.0.0.1:')[1].split()[0])
    return bridge, port


@needs_data
def test_mosys_take_through_replay_and_bridge_arrives_whole_and_in_order(ros_domain_env):
    take = read_f4(F4_TAKE)
    sock = listener()
    bridge, port = start_bridge(ros_domain_env, sock.getsockname()[1], 'method:=passthrough')
    try:
        replay = Process([sys.executable, '-m', 'camstab_ros.cli', 'replay', '--format', 'f4',
                          str(F4_TAKE), '--to', f'127.0.0.1:{port}', '--rate-factor', '10'],
                         ros_domain_env)
        got = receive(sock, len(take), timeout=10.0)
        assert replay.wait() == 0, ''.join(replay.output)
        assert f'sent {len(take)} datagrams, 0 send errors' in ''.join(replay.output)
    finally:
        assert bridge.stop() == 0, ''.join(bridge.output)
        sock.close()
    assert len(got) == len(take)
    for packet, data in zip(take, got):
        out = freed.decode(data)
        source = f4_to_freed(packet)
        assert (out.camera_id, out.zoom, out.focus) == (source.camera_id, source.zoom,
                                                        source.focus)
        p, q = freed.packet_to_pose(out)
        p_ref, q_ref = f4_to_pose(packet)
        np.testing.assert_allclose(p, p_ref, atol=1.5 / freed.POSITION_UNITS_PER_M)
        assert np.degrees(quat.angle_between(q, q_ref)) < 3e-4


@needs_data
def test_bridge_smooths_the_take_with_one_datagram_per_frame(ros_domain_env):
    take = read_f4(F4_TAKE)[:200]
    frames = [freed.encode(f4_to_freed(p)) for p in take]
    sock = listener()
    bridge, port = start_bridge(ros_domain_env, sock.getsockname()[1], 'method:=kalman',
                                'time_base:=frame_rate', 'frame_rate_hz:=25.0')
    try:
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        got = []
        for data in frames:
            sender.sendto(data, ('127.0.0.1', port))
            got += receive(sock, 1, timeout=1.0)
        sender.close()
    finally:
        assert bridge.stop() == 0
        sock.close()
    assert len(got) == len(frames)
    raw = np.array([f4_to_pose(p)[0] for p in take])
    smooth = np.array([freed.packet_to_pose(freed.decode(d))[0] for d in got])
    assert not np.allclose(raw, smooth, atol=1e-5)          # it did smooth
    assert np.max(np.abs(raw - smooth)) < 0.05               # and stayed on the take


def test_bridge_drops_and_counts_malformed_datagrams_and_strangers(ros_domain_env):
    sock = listener()
    bridge, port = start_bridge(ros_domain_env, sock.getsockname()[1], 'method:=passthrough')
    good = freed.encode(freed.FreeDPacket(1, 10.0, -5.0, 0.5, 1.0, 2.0, 1.5, 100, 200))
    bad_checksum = good[:-1] + bytes([(good[-1] + 1) % 256])
    try:
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for data in (good[:20], b'\xd2' + good[1:], bad_checksum, b'', good):
            sender.sendto(data, ('127.0.0.1', port))
        got = receive(sock, 2, timeout=1.0)
        sender.close()
    finally:
        assert bridge.stop() == 0
        sock.close()
    assert got == [good]


def test_bridge_on_a_port_in_use_exits_with_a_clear_error(ros_domain_env):
    taken = listener()
    port = taken.getsockname()[1]
    proc = subprocess.run(
        node_command('freed_bridge') + ['--ros-args', '-p', 'bind_address:=127.0.0.1',
                                        '-p', f'port:={port}'],
        cwd=ROOT, env=ros_domain_env, capture_output=True, text=True, timeout=30)
    taken.close()
    assert proc.returncode == 2
    assert f'UDP port 127.0.0.1:{port} is already in use' in proc.stderr + proc.stdout


def test_receiver_bounds_a_flood_and_counts_overflow_and_strangers():
    receiver = UdpReceiver('127.0.0.1', 0, queue_size=4)
    stranger = UdpReceiver('127.0.0.1', 0, allow=['10.0.0.0/8'])
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for i in range(20):
            sender.sendto(bytes([i]), receiver.address)
            sender.sendto(bytes([i]), stranger.address)
        batch = receiver.receive_batch()
        assert [data for data, _, _ in batch] == [bytes([i]) for i in range(16, 20)]
        assert (receiver.received, receiver.dropped_overflow) == (20, 16)
        assert stranger.receive_batch() == []
        assert (stranger.received, stranger.dropped_sender) == (20, 20)
    finally:
        sender.close()
        receiver.close()
        stranger.close()


def run_replay(*args):
    return subprocess.run([sys.executable, '-m', 'camstab_ros.cli', 'replay', *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize('content, fmt, message', [
    (None, 'f4', 'no such file'),
    (b'', 'freed', 'file is empty'),
    (b'', 'f4', 'file is empty'),
    (b'\xd1' * 40, 'freed', 'not a whole number of 29-byte'),
    (b'0 1 2 3 0 0 0 1\n', 'f4', 'no valid F4 packet'),
    (b'\xf4\x01\x05\x00\x01', 'f4', 'no valid F4 packet'),
    (b'{"transforms": []}\n', 'opentrackio', 'take.bin:1: invalid_sample'),
    (b'{"timing": {}}\n', 'opentrackio', 'no_pose'),
    (b'\x9f\x01', 'opentrackio', 'not CBOR'),
])
def test_replay_of_a_bad_file_sends_nothing_and_says_why(tmp_path, content, fmt, message):
    path = tmp_path / 'take.bin'
    if content is not None:
        path.write_bytes(content)
    sock = listener()
    try:
        proc = run_replay('--format', fmt, str(path), '--to',
                          f'127.0.0.1:{sock.getsockname()[1]}')
        assert receive(sock, 1, timeout=0.3) == []
    finally:
        sock.close()
    assert proc.returncode == 2
    assert message in proc.stderr


def test_replay_of_a_truncated_tum_file_names_the_line(tmp_path):
    path = tmp_path / 'take.tum'
    path.write_text('0.0 0 0 0 0 0 0 1\n0.1 0 0\n')
    with pytest.raises(ReplayError, match='take.tum:2'):
        load_frames('tum', path)


@pytest.mark.skipif(not TUM_TAKE.is_file(), reason='../shared/data is absent')
def test_tum_and_raw_freed_replays_keep_their_timing(tmp_path):
    frames, _ = load_frames('tum', TUM_TAKE)
    t = np.array([f[0] for f in frames])
    assert t[0] == 0.0 and 29.0 < t[-1] < 31.0
    raw = tmp_path / 'capture.freed'
    raw.write_bytes(b''.join(data[0] for _, data in frames[:50]))
    sock = listener()
    try:
        start = time.monotonic()
        proc = run_replay('--format', 'freed', str(raw), '--frame-rate', '100',
                          '--rate-factor', '2', '--to', f'127.0.0.1:{sock.getsockname()[1]}')
        elapsed = time.monotonic() - start
        got = receive(sock, 50, timeout=0.5)
    finally:
        sock.close()
    assert proc.returncode == 0, proc.stderr
    assert got == [data[0] for _, data in frames[:50]]
    assert elapsed >= 49 / 100 / 2  # a lower bound: it kept the frame timing


def test_replay_loop_repeats_the_take_in_order():
    frames = [(k / 1000.0, [freed.encode(freed.FreeDPacket(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
                                                           0, 0, k))]) for k in range(5)]
    calls = []
    sock = listener()
    try:
        sent, errors = replay(frames, '127.0.0.1', sock.getsockname()[1], rate_factor=2.0,
                              loop=True, should_stop=lambda: calls.append(1) or len(calls) >= 12)
        got = receive(sock, 12, timeout=0.5)
    finally:
        sock.close()
    assert (sent, errors) == (12, 0)
    assert [freed.decode(d).spare for d in got] == [0, 1, 2, 3, 4] * 2 + [0, 1]


def test_receiver_reports_the_datagrams_the_kernel_dropped():
    receiver = UdpReceiver('127.0.0.1', 0, queue_size=100000)
    receiver.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sent = 3000
    try:
        for k in range(sent):  # nobody reads: the small buffer overflows in the kernel
            sender.sendto(k.to_bytes(4, 'big') * 8, receiver.address)
        time.sleep(0.2)
        taken = []
        while True:
            batch = receiver.receive_batch()
            if not batch:
                break
            taken += batch
        # The kernel reports its count with the next datagram queued after the drops.
        sender.sendto(b'after the flood', receiver.address)
        taken += receiver.receive_batch()
    finally:
        sender.close()
        receiver.close()
    assert taken[-1][0] == b'after the flood'
    assert receiver.dropped_kernel > 0
    assert len(taken) + receiver.dropped_kernel == sent + 1


@pytest.mark.skipif(not TUM_TAKE.is_file(), reason='../shared/data is absent')
@pytest.mark.parametrize('fmt', ['tum', 'opentrackio'])
@pytest.mark.parametrize('protocol', ['freed', 'opentrackio'])
def test_replay_sends_either_protocol_from_any_recording(tmp_path, fmt, protocol):
    from camstab_ros.io import opentrackio as otio
    from camstab_ros.io.trajectory import read_trajectory
    traj = read_trajectory(TUM_TAKE)
    n = 40
    path = tmp_path / 'take.tum'
    if fmt == 'opentrackio':
        path = tmp_path / 'take.jsonl'
        recorded = [otio.make_sample(traj.p[k], traj.q[k], otio.new_id(), sequence=k,
                                     stamp_s=traj.t[k]) for k in range(n)]
        path.write_text('\n'.join(json.dumps(s) for s in recorded))
    else:
        rows = [(traj.t[k], *traj.p[k], *traj.q[k]) for k in range(n)]
        path.write_text('\n'.join(' '.join(f'{v:.9f}' for v in row) for row in rows))
    sock = listener()
    try:
        proc = run_replay('--format', fmt, str(path), '--protocol', protocol, '--encoding',
                          'cbor', '--rate-factor', '5', '--to',
                          f'127.0.0.1:{sock.getsockname()[1]}')
        got = receive(sock, n, timeout=0.5)
    finally:
        sock.close()
    assert proc.returncode == 0, proc.stderr
    assert len(got) == n
    for k, data in enumerate(got):
        if protocol == 'freed':
            p, q = freed.packet_to_pose(freed.decode(data))
        else:
            segment = otio.parse_packet(data)
            assert segment.encoding == 'cbor' and segment.sequence == k
            sample = otio.decode_payload(segment.data, 'cbor')
            if fmt == 'opentrackio':
                assert sample == recorded[k]  # sent as recorded
            p, q = otio.sample_pose(sample)
        np.testing.assert_allclose(p, traj.p[k], atol=1e-4)
        assert np.degrees(quat.angle_between(q, traj.q[k])) < 1e-3

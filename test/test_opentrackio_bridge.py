"""tracking_bridge and the OpenTrackIO nodes as processes, real UDP on 127.0.0.1, real DDS."""
import json
from pathlib import Path
import re
import socket
import time

from camstab_ros.io import freed, opentrackio as otio
from camstab_ros.io.mosys_f4 import f4_to_freed, f4_to_pose, read_f4
from camstab_ros.io.udp import UdpReceiver
from camstab_ros.tools.processes import node_command
import numpy as np
import pytest
from ros_helpers import Observer, start, status_name, stop
from scipy.spatial.transform import Rotation


SHARED = Path(__file__).resolve().parents[2] / 'shared' / 'data'
F4_TAKE = SHARED / 'real' / 'mosys_startracker_A003_C001_01.f4'
EXAMPLE = SHARED / 'reference' / 'opentrackio' / 'examples' / 'complete_dynamic_example.json'
needs_data = pytest.mark.skipif(not F4_TAKE.is_file(),
                                reason='../shared/data is absent (real recordings)')
ANGLE_STEP_DEG = 1.0 / freed.ANGLE_UNITS_PER_DEG
POSITION_STEP_M = 1.0 / freed.POSITION_UNITS_PER_M


@pytest.fixture(scope='module')
def validator():
    jsonschema = pytest.importorskip('jsonschema')
    schema = json.loads((SHARED / 'reference' / 'opentrackio' / 'schema.json').read_text())
    return jsonschema.Draft202012Validator(schema)


def listener():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind(('127.0.0.1', 0))
    sock.settimeout(0.3)
    return sock


def receive(sock, count, timeout):
    """Datagrams until count arrived or nothing came for `timeout` seconds."""
    got, last = [], time.monotonic()
    while len(got) < count and time.monotonic() - last < timeout:
        try:
            got.append(sock.recv(65535))
            last = time.monotonic()
        except socket.timeout:
            pass
    return got


def samples_of(datagrams):
    """Whole OpenTrackIO samples of datagrams, in order."""
    assembler, out = otio.Reassembler(), []
    for data in datagrams:
        whole = assembler.add(otio.parse_packet(data))
        if whole is not None:
            out.append(otio.decode_sample(whole[1], whole[0]))
    return out


def start_node(executable, env, tmp_path, *params, remaps=()):
    """Start a node listening on a free port of 127.0.0.1; (process, its port)."""
    command = node_command(executable) + ['--ros-args', '-p', 'bind_address:=127.0.0.1',
                                          '-p', 'port:=0']
    for param in params:
        command += ['-p', param]
    for remap in remaps:
        command += ['-r', remap]
    log = tmp_path / f'{executable}_{time.monotonic_ns()}.log'
    proc = start(command, env, log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = log.read_text()
        found = re.search(r'udp 127\.0\.0\.1:(\d+)', text)
        if found:
            return proc, int(found.group(1))
        assert proc.poll() is None, text
        time.sleep(0.05)
    raise AssertionError(log.read_text())


def start_bridge(env, tmp_path, destination_port, *params, executable='tracking_bridge'):
    return start_node(executable, env, tmp_path, 'method:=passthrough',
                      f'destination:=127.0.0.1:{destination_port}', *params)


def lockstep(datagrams_per_sample, port, sock):
    """Send each sample's datagrams and wait for its answer: the answers, in order."""
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    got = []
    for datagrams in datagrams_per_sample:
        for data in datagrams:
            sender.sendto(data, ('127.0.0.1', port))
        got += receive(sock, 1, timeout=1.0)
    sender.close()
    return got


@needs_data
def test_mosys_take_freed_to_opentrackio_and_back_keeps_every_frame(
        ros_domain_env, tmp_path, validator):
    take = read_f4(F4_TAKE)
    frames = [f4_to_freed(p) for p in take]
    to_otio, to_freed = listener(), listener()
    bridge_a, port_a = start_bridge(ros_domain_env, tmp_path, to_otio.getsockname()[1],
                                    'output_protocol:=opentrackio')
    bridge_b, port_b = start_bridge(ros_domain_env, tmp_path, to_freed.getsockname()[1],
                                    'input_protocol:=opentrackio')
    try:
        otio_datagrams = lockstep([[freed.encode(f)] for f in frames], port_a, to_otio)
        freed_datagrams = lockstep([[d] for d in otio_datagrams], port_b, to_freed)
    finally:
        assert stop(bridge_a) == 0 and stop(bridge_b) == 0
        to_otio.close()
        to_freed.close()
    samples = samples_of(otio_datagrams)
    assert len(samples) == len(frames)  # every frame, each in one datagram
    for k, (packet, frame, sample) in enumerate(zip(take, frames, samples)):
        if k % 50 == 0:
            validator.validate(sample)
        assert sample['timing']['sequenceNumber'] == k
        assert sample['sourceNumber'] == frame.camera_id
        assert sample['lens']['rawEncoders'] == {'zoom': frame.zoom, 'focus': frame.focus}
        p, q = otio.sample_pose(sample)
        p_ref, q_ref = f4_to_pose(packet)
        np.testing.assert_allclose(p, p_ref, atol=POSITION_STEP_M)
        error = (Rotation.from_quat(q).inv() * Rotation.from_quat(q_ref)).magnitude()
        assert np.degrees(error) < 3 * ANGLE_STEP_DEG
    assert len(freed_datagrams) == len(frames)
    for frame, data in zip(frames, freed_datagrams):
        back = freed.decode(data)
        assert (back.camera_id, back.zoom, back.focus) == (frame.camera_id, frame.zoom,
                                                           frame.focus)
        for axis in ('pan_deg', 'tilt_deg', 'roll_deg'):
            assert abs(getattr(back, axis) - getattr(frame, axis)) <= ANGLE_STEP_DEG * 1.01
        for axis in ('x_m', 'y_m', 'z_m'):
            assert abs(getattr(back, axis) - getattr(frame, axis)) <= POSITION_STEP_M * 1.01


def big_sample(k, t0=1_718_806_554.0, rate_hz=240.0):
    sample = json.loads(EXAMPLE.read_text())
    sample['custom'] = {'calibration': 'x' * 3000}  # beyond one datagram
    sample['timing']['sampleTimestamp'] = otio.timestamp_fields(t0 + k / rate_hz)
    sample['timing']['sequenceNumber'] = k
    sample['sampleId'] = otio.new_id()
    return sample


@needs_data
@pytest.mark.parametrize('encoding', ['json', 'cbor'])
def test_opentrackio_passes_through_with_segments_and_everything_but_the_pose_untouched(
        ros_domain_env, tmp_path, validator, encoding):
    sock = listener()
    bridge, port = start_bridge(ros_domain_env, tmp_path, sock.getsockname()[1],
                                'input_protocol:=opentrackio', 'output_protocol:=opentrackio',
                                f'opentrackio_encoding:={encoding}')
    sent = [big_sample(k) for k in range(30)]
    per_sample = [otio.packets(otio.encode_payload(s, 'cbor'), 'cbor', k)
                  for k, s in enumerate(sent)]
    assert all(len(d) >= 3 for d in per_sample)
    try:
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for datagrams in per_sample:
            for data in reversed(datagrams):  # reordered on the way
                sender.sendto(data, ('127.0.0.1', port))
            time.sleep(0.005)
        got = receive(sock, 10 ** 6, timeout=1.0)
        sender.close()
    finally:
        assert stop(bridge) == 0
        sock.close()
    assert len(got) >= 3 * len(sent) and all(len(d) <= 1500 for d in got)
    assert {otio.parse_packet(d).encoding for d in got} == {encoding}
    out = samples_of(got)
    assert len(out) == len(sent)
    for before, after in zip(sent, out):
        validator.validate(after)
        for key in ('timing', 'lens', 'tracker', 'custom', 'globalStage', 'sourceId'):
            assert after[key] == before[key], key
        assert after['relatedSampleIds'][-1] == before['sampleId']
        p0, q0 = otio.sample_pose(before)
        p1, q1 = otio.sample_pose(after)
        np.testing.assert_allclose(p1, p0, atol=1e-9)
        assert (Rotation.from_quat(q0).inv() * Rotation.from_quat(q1)).magnitude() < 1e-9


def good_sample(k):
    return otio.make_sample([1.0 + 0.001 * k, 2.0, 1.5], [0.0, 0.0, 0.0, 1.0],
                            'urn:uuid:00000000-0000-4000-8000-000000000001', sequence=k,
                            stamp_s=1000.0 + k / 60.0)


def packet_with(payload, encoding='json', sequence=1):
    return otio.packets(payload, encoding, sequence)


def test_bad_opentrackio_input_is_dropped_by_reason_and_good_samples_keep_flowing(
        ros_domain, tmp_path):
    sock = listener()
    bridge, port = start_bridge(ros_domain.env(), tmp_path, sock.getsockname()[1],
                                'input_protocol:=opentrackio', 'output_protocol:=opentrackio')
    good = [otio.packets(otio.encode_payload(good_sample(k)), 'json', k)[0]
            for k in range(8)]
    no_pose = good_sample(100)
    del no_pose['transforms']
    invalid = good_sample(101)
    invalid['transforms'][0]['translation']['x'] = 'one metre'
    split = otio.packets(otio.encode_payload(big_sample(0)), 'json', 500)
    bad = {
        'wrong_identifier': [b'FreD' + good[0][4:]],
        'bad_checksum': [good[0][:-1] + bytes([good[0][-1] ^ 0x20])],
        'truncated_header': [good[0][:10]],
        'garbage_payload': packet_with(b'{"transforms": [', 'json', 200)
        + packet_with(b'\xff\x00\x13', 'cbor', 201),
        'invalid_sample': packet_with(otio.encode_payload(invalid), 'json', 202),
        'no_pose': packet_with(otio.encode_payload(no_pose), 'json', 203),
        'incomplete_sample': split[:1],  # its other segments are lost
    }
    expected = {reason: len(datagrams) for reason, datagrams in bad.items()}
    expected['incomplete_sample'] = 1
    observer = Observer(ros_domain.domain_id)
    try:
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        got = []
        for k, datagrams in enumerate(bad.values()):
            for data in datagrams:
                sender.sendto(data, ('127.0.0.1', port))
            sender.sendto(good[k], ('127.0.0.1', port))
            got += receive(sock, 1, timeout=1.0)
        # The incomplete sample is pushed out by MAX_PENDING newer incomplete ones.
        for seq in range(600, 600 + otio.MAX_PENDING):
            sender.sendto(otio.packets(otio.encode_payload(big_sample(seq)), 'json',
                                       seq)[0], ('127.0.0.1', port))
        sender.sendto(good[7], ('127.0.0.1', port))
        got += receive(sock, 1, timeout=1.0)
        sender.close()
        name = status_name('tracking_bridge', 'tracking bridge')
        observer.spin_until(
            lambda: name in observer.diagnostics and all(
                observer.diagnostics[name][1].get(f'dropped.{r}') == str(n)
                for r, n in expected.items()), what=f'drops counted as {expected}')
        figures = observer.diagnostics[name][1]
    finally:
        observer.close()
        assert stop(bridge) == 0
        sock.close()
    assert [s['timing']['sequenceNumber'] for s in samples_of(got)] == list(range(8))
    assert figures['received'] == '8'


def test_frame_clock_output_one_pose_per_video_frame_on_the_grid(
        ros_domain_env, tmp_path, validator):
    sock = listener()
    bridge, port = start_bridge(ros_domain_env, tmp_path, sock.getsockname()[1],
                                'input_protocol:=opentrackio', 'output_protocol:=opentrackio',
                                'output_rate:=25', 'output_delay_frames:=1.0')
    t0 = 1_718_806_554.013  # PTP seconds of the first sample, between two frames
    rate_hz, seconds = 240.0, 2.0

    def pose(t):
        s = t - t0
        return [0.3 * np.sin(1.3 * s), 2.0 + 0.1 * s, 1.5], Rotation.from_euler(
            'z', 20.0 * s, degrees=True).as_quat()
    try:
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        start_s = time.monotonic()
        for k in range(int(rate_hz * seconds)):
            t = t0 + k / rate_hz
            sample = otio.make_sample(*pose(t), 'urn:uuid:00000000-0000-4000-8000-000000000002',
                                      sequence=k, stamp_s=t)
            sender.sendto(otio.packets(otio.encode_payload(sample), 'json', k)[0],
                          ('127.0.0.1', port))
            time.sleep(max(0.0, start_s + (k + 1) / rate_hz - time.monotonic()))
        got = receive(sock, 1000, timeout=1.0)
        sender.close()
    finally:
        assert stop(bridge) == 0
        sock.close()
    out = samples_of(got)
    stamps = [s['timing']['sampleTimestamp'] for s in out]
    ns = [st['seconds'] * 10 ** 9 + st['nanoseconds'] for st in stamps]
    frame_ns = 40_000_000
    assert all(n % frame_ns == 0 for n in ns), 'every output on the 25 fps grid'
    assert np.all(np.diff(ns) == frame_ns), 'one output per frame, none missing or twice'
    first = -(-round(t0 * 1e9) // frame_ns) * frame_ns
    assert ns[0] == first  # nothing before the data
    # 2 s of frames, then extrapolated and held frames up to stale_s (0.5 s) past the data.
    assert 48 <= len(out) <= 50 + 13
    for sample, n in zip(out, ns):
        validator.validate(sample)
        assert sample['timing']['sampleRate'] == {'num': 25, 'denom': 1}
        p, q = otio.sample_pose(sample)
        p_ref, q_ref = pose(n * 1e-9)
        if n * 1e-9 <= t0 + seconds - 2 / rate_hz:  # inside the data: interpolated
            np.testing.assert_allclose(p, p_ref, atol=POSITION_STEP_M)
            assert np.degrees((Rotation.from_quat(q).inv() * Rotation.from_quat(q_ref))
                              .magnitude()) < ANGLE_STEP_DEG


def test_opentrackio_receiver_to_sender_over_dds_passes_pose_and_lens(ros_domain_env,
                                                                      tmp_path, validator):
    sock = listener()
    sender_node, _ = start_node('opentrackio_sender', ros_domain_env, tmp_path,
                                f'destination:=127.0.0.1:{sock.getsockname()[1]}',
                                remaps=['pose_in:=pose_out', 'lens_in:=lens_out'])
    receiver, port = start_node('opentrackio_receiver', ros_domain_env, tmp_path,
                                'time_base:=source')  # the samples' own stamps through
    sent = []
    try:
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        got, deadline = [], time.monotonic() + 20
        k = 0
        while len(got) < 20 and time.monotonic() < deadline:
            sample = good_sample(k)
            sample['lens'] = {'encoders': {'zoom': 0.25, 'focus': 0.5}}
            sent.append(sample)
            tx.sendto(otio.packets(otio.encode_payload(sample), 'json', k)[0],
                      ('127.0.0.1', port))
            got += receive(sock, 1, timeout=0.2)
            k += 1
        tx.close()
    finally:
        assert stop(receiver) == 0 and stop(sender_node) == 0
        sock.close()
    out = samples_of(got)
    assert len(out) >= 20
    by_stamp = {json.dumps(s['timing']['sampleTimestamp']): s for s in sent}
    for sample in out[1:]:  # the first may go before its lens values
        validator.validate(sample)
        source = by_stamp[json.dumps(sample['timing']['sampleTimestamp'])]  # stamp kept
        np.testing.assert_allclose(otio.sample_pose(sample)[0], otio.sample_pose(source)[0],
                                   atol=1e-9)
        assert sample['lens']['encoders'] == {'zoom': 0.25, 'focus': 0.5}


def multicast_works(group='239.135.1.77'):
    try:
        receiver = UdpReceiver(group, 0, timeout=0.5)
    except OSError:
        return False
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            tx.sendto(b'probe', (group, receiver.address[1]))
        return bool(receiver.receive_batch())
    except OSError:
        return False
    finally:
        receiver.close()


def test_a_bridge_joins_an_opentrackio_multicast_group(ros_domain_env, tmp_path):
    if not multicast_works():
        pytest.skip('this host does not loop multicast back (no multicast route)')
    group = otio.multicast_group(77)
    sock = listener()
    command = node_command('tracking_bridge') + [
        '--ros-args', '-p', f'bind_address:={group}', '-p', 'port:=0',
        '-p', 'input_protocol:=opentrackio', '-p', 'method:=passthrough',
        '-p', f'destination:=127.0.0.1:{sock.getsockname()[1]}']
    log = tmp_path / 'multicast.log'
    bridge = start(command, ros_domain_env, log)
    try:
        deadline = time.monotonic() + 30
        while not re.search(r'udp 239\.135\.1\.77:(\d+)', log.read_text()):
            assert time.monotonic() < deadline and bridge.poll() is None, log.read_text()
            time.sleep(0.05)
        port = int(re.search(r'udp 239\.135\.1\.77:(\d+)', log.read_text()).group(1))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            tx.sendto(otio.packets(otio.encode_payload(good_sample(0)), 'json', 0)[0],
                      (group, port))
            got = receive(sock, 1, timeout=2.0)
    finally:
        assert stop(bridge) == 0
        sock.close()
    assert len(got) == 1 and freed.decode(got[0]).y_m == pytest.approx(1.0, abs=1e-4)


def test_output_rate_is_refused_with_a_clear_error(ros_domain_env, tmp_path):
    command = node_command('tracking_bridge') + [
        '--ros-args', '-p', 'bind_address:=127.0.0.1', '-p', 'port:=0',
        '-p', 'output_rate:=fast']
    log = tmp_path / 'bad_rate.log'
    proc = start(command, ros_domain_env, log)
    assert proc.wait(30) == 2
    assert "'fast' is not an output rate" in log.read_text()


def test_a_flood_is_counted_and_the_next_good_sample_still_goes_through(ros_domain,
                                                                        tmp_path):
    sock = listener()
    bridge, port = start_bridge(ros_domain.env(), tmp_path, sock.getsockname()[1],
                                'input_protocol:=opentrackio', 'output_protocol:=opentrackio')
    observer = Observer(ros_domain.domain_id)
    flood = 5000
    try:
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for k in range(flood):
            sender.sendto(b'OTrk' + bytes(8), ('127.0.0.1', port))  # truncated headers
        time.sleep(0.5)
        good = otio.packets(otio.encode_payload(good_sample(1)), 'json', 1)[0]
        sender.sendto(good, ('127.0.0.1', port))
        got = receive(sock, 1, timeout=2.0)
        sender.close()
        name = status_name('tracking_bridge', 'tracking bridge')

        def counted():
            figures = observer.diagnostics.get(name, (None, {}))[1]
            return sum(int(figures.get(f'dropped.{r}', 0)) for r in (
                'truncated_header', 'queue_overflow', 'kernel_overflow'))
        observer.spin_until(lambda: counted() == flood, what=f'{flood} drops counted')
    finally:
        observer.close()
        assert stop(bridge) == 0
        sock.close()
    assert [s['timing']['sequenceNumber'] for s in samples_of(got)] == [1]

"""
Mo-Sys F4 decoding on the real StarTracker take, and its handling of damaged takes.

Known values come from the camdkit reader's tests, which index packets from 0 (its clip
holds packet i at index i): packet 8 carries timecode 15:03:47:10, packet 9 the
translation, packet 10 the rotation.
"""
import logging
from pathlib import Path

from camstab_ros.io.freed import decode, encode, FreeDPacket, packet_to_pose
from camstab_ros.io.mosys_f4 import (f4_to_freed, f4_to_pose, F4Error, F4Packet, iter_packets,
                                     read_f4, Timecode)
import numpy as np
import pytest
from scipy.spatial.transform import Rotation


TAKE = (Path(__file__).resolve().parents[1] / '..' / 'shared' / 'data' / 'real'
        / 'mosys_startracker_A003_C001_01.f4')
PACKET_SIZE = 105  # 20 axes * 5 + 5 in this take

needs_take = pytest.mark.skipif(
    not TAKE.is_file(), reason=f'shared data absent: {TAKE} (expected ../shared next to the '
    'project root)')


@pytest.fixture(scope='module')
def take():
    return read_f4(TAKE)


def packet_bytes(axes, camera_id=0, status=0x77):
    """Build an F4 packet by hand: axes is a list of (id, status, 24-bit value)."""
    body = bytes([0xF4, camera_id, len(axes), status])
    for axis_id, axis_status, value in axes:
        body += bytes([axis_id, axis_status]) + value.to_bytes(3, 'big')
    return body + bytes([(0x40 - sum(body)) & 0xFF])


@needs_take
def test_every_packet_of_the_take_decodes(take):
    assert len(take) == 1497
    assert take.skipped == []
    assert TAKE.stat().st_size == 1497 * PACKET_SIZE
    assert all(len(p.axes) == 20 and p.camera_id == 0 for p in take)
    # The checksum the reader verified, recomputed independently from the spec.
    data = TAKE.read_bytes()
    for start in range(0, len(data), PACKET_SIZE):
        assert (0x40 - sum(data[start:start + PACKET_SIZE - 1])) % 256 == \
            data[start + PACKET_SIZE - 1]


@needs_take
def test_known_values_from_camdkit(take):
    assert take[8].timecode == Timecode(15, 3, 47, 10)
    assert str(take[8].timecode) == '15:03:47:10'
    assert take[8].frame_rate == 25.0
    assert (take[9].x, take[9].y, take[9].height) == pytest.approx(
        (-8.121, -185.368, 119.806), abs=1e-12)
    assert (take[9].x_m, take[9].y_m, take[9].height_m) == pytest.approx(
        (-0.08121, -1.85368, 1.19806), abs=1e-12)
    assert (take[10].pan_deg, take[10].tilt_deg, take[10].roll_deg) == pytest.approx(
        (-2.969, -28.03, 3.1), abs=1e-12)
    assert (take[11].focus, take[11].zoom) == (0.7643280029296875, 0.0014190673828125)
    assert take[2].recording
    assert take[3].tracking_status == 'Optical Good'
    assert take[6].sequence == 13
    assert take[7].genlocked


@needs_take
def test_timecode_runs_one_frame_per_packet(take):
    def frame_count(p):
        tc = p.timecode
        return ((tc.hours * 60 + tc.minutes) * 60 + tc.seconds) * 25 + tc.frames

    counts = np.array([frame_count(p) for p in take])
    assert np.all(np.diff(counts) == 1)
    assert str(take[0].timecode) == '15:03:47:02'
    assert str(take[-1].timecode) == '15:04:46:23'
    assert all(p.frame_rate == 25.0 for p in take)


@needs_take
def test_take_values_are_physically_plausible(take):
    heights = np.array([p.height_m for p in take])
    zooms = np.array([p.zoom for p in take])
    assert 1.0 < heights.min() < heights.max() < 1.5  # a camera on a tripod, in metres
    assert 0.0 <= zooms.min() < zooms.max() < 1.0


def test_timecode_bits_decoded_by_hand():
    # 23:59:59:29 at 30 fps: bits 10111 111011 111011 011101, axis status rate bits 10.
    value = (23 << 18) | (59 << 12) | (59 << 6) | 29
    packet = next(iter_packets(packet_bytes([(0xF8, 0b0100_0000, value)])))
    assert packet.timecode == Timecode(23, 59, 59, 29)
    assert packet.frame_rate == 30.0
    assert packet.pan_deg is None and packet.tracking_status is None


def test_hand_built_packet_decodes_signed_and_lens_values():
    packet = next(iter_packets(packet_bytes([
        (0x01, 0, 0x1000000 - 180000),   # pan -180.000 deg
        (0x02, 0, 90000),                # tilt +90.000 deg
        (0x13, 0, 0x800000),             # roll at the negative 24-bit extreme
        (0x05, 0, 0x7FFFFF),             # X at the positive extreme, cm
        (0x06, 0, 0xFFFFFF),             # Y = -0.001 cm
        (0x07, 0, 150000),               # height 150 cm
        (0x04, 0, 0xAB8000),             # zoom: only the low 16 bits count
        (0x03, 0, 0x00FFFF),             # focus
        (0xF9, 0, 0x00D000),             # tracking status 13
    ], camera_id=3, status=0x05)))
    assert (packet.pan_deg, packet.tilt_deg, packet.roll_deg) == (-180.0, 90.0, -8388.608)
    assert (packet.x, packet.y, packet.height) == (8388.607, -0.001, 150.0)
    assert packet.height_m == pytest.approx(1.5)
    assert (packet.zoom, packet.focus) == (0.5, 65535 / 65536)
    assert packet.tracking_status == 'Mechanical Encoders Only'
    assert (packet.camera_id, packet.sequence, packet.recording, packet.genlocked) == \
        (3, 5, False, False)


@needs_take
def test_f4_pose_uses_the_freed_mapping(take):
    packet = take[10]
    position, quaternion = f4_to_pose(packet)
    freed = FreeDPacket(0, -2.969, -28.03, 3.1, packet.x / 100, packet.y / 100,
                        packet.height / 100, 0, 0)
    expected_p, expected_q = packet_to_pose(freed)
    np.testing.assert_allclose(position, expected_p, atol=1e-12)
    np.testing.assert_allclose(quaternion, expected_q, atol=1e-12)
    # Tilted 28 deg down: the camera's forward axis points below the horizon.
    forward = Rotation.from_quat(quaternion).apply([1.0, 0.0, 0.0])
    assert forward[2] == pytest.approx(-np.sin(np.radians(28.03)), abs=1e-3)


@needs_take
def test_take_replays_as_freed_within_quantisation(take):
    assert (f4_to_freed(take[0]).zoom, f4_to_freed(take[0]).focus) == (0x5D, 0xC3AB)
    for packet in take[:100]:
        back = decode(encode(f4_to_freed(packet)))
        assert abs(back.pan_deg - packet.pan_deg) <= 0.5 / 32768
        assert abs(back.z_m - packet.height_m) <= 0.5 / 64000
        assert back.zoom == round(packet.zoom * 65536)


def test_f4_to_freed_requires_the_pose_axes():
    with pytest.raises(F4Error, match='lacks pose axes pan_deg, tilt_deg, roll_deg, x, y, '
                                      'height'):
        f4_to_freed(F4Packet(camera_id=0, status=0))


@needs_take
def test_truncated_take_skips_and_counts_the_tail(tmp_path, caplog):
    data = TAKE.read_bytes()
    cut = tmp_path / 'truncated.f4'
    cut.write_bytes(data[:-40])
    with caplog.at_level(logging.WARNING, logger='camstab_ros.io.mosys_f4'):
        partial = read_f4(cut)
    assert len(partial) == 1496
    assert len(partial.skipped) == 1
    skip = partial.skipped[0]
    assert (skip.offset, skip.length) == (1496 * PACKET_SIZE, PACKET_SIZE - 40)
    assert '20 axes need 105 bytes, 65 left' in skip.reason
    assert '1496 packets decoded, 1 bad stretches skipped (65 bytes)' in partial.summary()
    assert f'offset {1496 * PACKET_SIZE}' in caplog.text
    with pytest.raises(F4Error, match=f'truncated.f4 at offset {1496 * PACKET_SIZE} '
                                      r'\(0x26598\): truncated packet'):
        read_f4(cut, strict=True)


@needs_take
@pytest.mark.parametrize('flip_at, lost', [
    (500 * PACKET_SIZE + 37, [500]),      # an axis data byte: checksum fails
    (500 * PACKET_SIZE + 2, [500]),       # the axis count: packet length is wrong
    (500 * PACKET_SIZE, [500]),           # the start byte
])
def test_flipped_byte_skips_only_the_damaged_packet(tmp_path, flip_at, lost):
    data = bytearray(TAKE.read_bytes())
    data[flip_at] ^= 0x5A
    damaged = tmp_path / 'flipped.f4'
    damaged.write_bytes(bytes(data))
    good = read_f4(TAKE)
    partial = read_f4(damaged)
    assert len(partial) == 1497 - len(lost)
    assert [(s.offset, s.length) for s in partial.skipped] == [
        (i * PACKET_SIZE, PACKET_SIZE) for i in lost]
    kept = [p for i, p in enumerate(good) if i not in lost]
    assert [p.timecode for p in partial] == [p.timecode for p in kept]
    with pytest.raises(F4Error, match=f'flipped.f4 at offset {500 * PACKET_SIZE} '):
        read_f4(damaged, strict=True)


@needs_take
def test_checksum_error_message_names_expected_and_received(tmp_path):
    data = bytearray(TAKE.read_bytes()[:3 * PACKET_SIZE])
    data[PACKET_SIZE + 10] ^= 0x01
    with pytest.raises(F4Error, match=r'offset 105 \(0x69\): checksum mismatch: expected '
                                      r'0x[0-9A-F]{2}, got 0x[0-9A-F]{2}'):
        list(iter_packets(bytes(data), strict=True))
    assert len(list(iter_packets(bytes(data)))) == 2


def test_garbage_between_packets_is_skipped(tmp_path):
    one = packet_bytes([(0x01, 0, 1000)])
    two = packet_bytes([(0x01, 0, 2000)])
    packets = list(iter_packets(b'\x00\xF4\x13' + one + one + b'junk\xF4' + two + one))
    assert [p.pan_deg for p in packets] == [1.0, 1.0, 2.0, 1.0]
    # After garbage a packet is trusted only if a valid packet (or the end) follows it, so
    # a lone packet between two garbage stretches is skipped with them, and counted.
    path = tmp_path / 'garbage.f4'
    path.write_bytes(b'junk' + one + b'junk' + two)
    take = read_f4(path)
    assert [p.pan_deg for p in take] == [2.0]
    assert [(s.offset, s.length) for s in take.skipped] == [(0, 4 + len(one) + 4)]


def test_repeated_axis_is_malformed():
    with pytest.raises(F4Error, match='axis id appears twice'):
        list(iter_packets(packet_bytes([(0x01, 0, 1), (0x01, 0, 2)]), strict=True))


def test_zero_axis_packet_is_malformed():
    with pytest.raises(F4Error, match='zero axes'):
        list(iter_packets(bytes([0xF4, 0, 0, 0, 0x4C]), strict=True))


def test_empty_input_errors_clearly(tmp_path):
    empty = tmp_path / 'empty.f4'
    empty.write_bytes(b'')
    with pytest.raises(F4Error, match='empty.f4: file is empty'):
        read_f4(empty)
    with pytest.raises(F4Error, match='no data'):
        list(iter_packets(b''))


def test_file_without_any_packet_errors_clearly(tmp_path):
    junk = tmp_path / 'junk.f4'
    junk.write_bytes(bytes(range(200)))
    with pytest.raises(F4Error, match=r'no valid F4 packet in 200 bytes .*1 bad stretches'):
        read_f4(junk)

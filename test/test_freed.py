"""FreeD D1 codec and the FreeD <-> REP 103 pose mapping."""
import dataclasses
import math

from camstab_ros.core.quaternion import angle_between
from camstab_ros.io.freed import (AxisMapping, decode, encode, FreeDError, FreeDPacket,
                                  packet_to_pose, pose_to_packet)
import numpy as np
import pytest
from scipy.spatial.transform import Rotation


ANGLE_STEP = 1.0 / 32768  # degrees
POSITION_STEP = 1.0 / 64000  # metres


def with_checksum(body_hex):
    """Message from the hex of bytes 0..27, checksum computed from the spec by hand."""
    body = bytes.fromhex(body_hex.replace(' ', ''))
    assert len(body) == 28
    return body + bytes([(0x40 - sum(body)) & 0xFF])


def random_packet(rng):
    return FreeDPacket(
        camera_id=int(rng.integers(0, 256)),
        pan_deg=rng.uniform(-180, 180), tilt_deg=rng.uniform(-90, 90),
        roll_deg=rng.uniform(-180, 180),
        x_m=rng.uniform(-131, 131), y_m=rng.uniform(-131, 131), z_m=rng.uniform(-131, 131),
        zoom=int(rng.integers(0, 1 << 24)), focus=int(rng.integers(0, 1 << 24)),
        spare=int(rng.integers(0, 1 << 16)))


def test_encode_decode_round_trip_within_quantisation():
    rng = np.random.default_rng(7)
    for _ in range(500):
        packet = random_packet(rng)
        data = encode(packet)
        assert len(data) == 29 and data[0] == 0xD1
        back = decode(data)
        for name in ('pan_deg', 'tilt_deg', 'roll_deg'):
            assert abs(getattr(back, name) - getattr(packet, name)) <= ANGLE_STEP / 2
        for name in ('x_m', 'y_m', 'z_m'):
            assert abs(getattr(back, name) - getattr(packet, name)) <= POSITION_STEP / 2
        for name in ('camera_id', 'zoom', 'focus', 'spare'):
            assert getattr(back, name) == getattr(packet, name)
        assert encode(back) == data


def test_known_packet_decodes_to_spec_values():
    # pan +90 deg = 0x2D0000; tilt -45 deg = -0x168000 -> 0xE98000; roll 0;
    # X +1 m = 64000 = 0x00FA00; Y -2.5 m = -160000 -> 0xFD8F00; Z +0.5 mm = 32 = 0x000020;
    # zoom 0x123456, focus 0xABCDEF, spare 0x0102.
    data = with_checksum(
        'D1 07 2D0000 E98000 000000 00FA00 FD8F00 000020 123456 ABCDEF 0102')
    packet = decode(data)
    assert packet == FreeDPacket(camera_id=7, pan_deg=90.0, tilt_deg=-45.0, roll_deg=0.0,
                                 x_m=1.0, y_m=-2.5, z_m=0.0005, zoom=0x123456,
                                 focus=0xABCDEF, spare=0x0102)
    assert encode(packet) == data


def test_known_packet_with_24_bit_extremes():
    # 0x800000 is the most negative count, 0x7FFFFF the most positive, 0xFFFFFF is -1.
    data = with_checksum(
        'D1 FF 800000 7FFFFF FFFFFF 800000 7FFFFF FFFFFF FFFFFF 000000 FFFF')
    packet = decode(data)
    assert packet.camera_id == 255
    assert packet.pan_deg == -256.0
    assert packet.tilt_deg == pytest.approx(8388607 / 32768, abs=0)
    assert packet.roll_deg == -ANGLE_STEP
    assert packet.x_m == pytest.approx(-131.072, abs=1e-12)
    assert packet.y_m == pytest.approx(8388607 / 64000, abs=0)
    assert packet.z_m == pytest.approx(-POSITION_STEP, abs=1e-15)
    assert (packet.zoom, packet.focus, packet.spare) == (0xFFFFFF, 0, 0xFFFF)
    assert encode(packet) == data


def test_zero_packet_with_checksum_by_hand():
    # checksum = (0x40 - 0xD1 - 0x01) mod 256 = 0x6E.
    data = bytes([0xD1, 0x01]) + bytes(26) + bytes([0x6E])
    packet = decode(data)
    assert (packet.camera_id, packet.pan_deg, packet.x_m, packet.zoom) == (1, 0.0, 0.0, 0)


@pytest.mark.parametrize('data, message', [
    (b'', 'must be 29 bytes, got 0'),
    (bytes(28), 'must be 29 bytes, got 28'),
    (bytes(30), 'must be 29 bytes, got 30'),
    (bytes([0xD0]) + bytes(28), 'type 0xD0 is not supported (expected 0xD1)'),
])
def test_malformed_length_and_type(data, message):
    with pytest.raises(FreeDError, match=message.replace('(', r'\(').replace(')', r'\)')):
        decode(data)


def test_bad_checksum_names_expected_and_received():
    good = encode(FreeDPacket(1, 10.0, 5.0, 0.0, 1.0, 2.0, 1.5, 100, 200))
    bad = good[:-1] + bytes([(good[-1] + 1) % 256])
    with pytest.raises(FreeDError, match=f'expected 0x{good[-1]:02X}, got 0x{bad[-1]:02X}'):
        decode(bad)
    flipped = bytearray(good)
    flipped[12] ^= 0x10
    with pytest.raises(FreeDError, match='checksum mismatch'):
        decode(bytes(flipped))


@pytest.mark.parametrize('change, message', [
    ({'pan_deg': 256.0}, 'pan_deg=256.0: outside the signed 24-bit range'),
    ({'tilt_deg': -256.01}, 'tilt_deg=-256.01: outside'),
    ({'roll_deg': math.nan}, 'roll_deg=nan: not a finite number'),
    ({'x_m': 131.072}, 'x_m=131.072: outside'),
    ({'y_m': -131.1}, 'y_m=-131.1: outside'),
    ({'z_m': math.inf}, 'z_m=inf: not a finite number'),
    ({'zoom': -1}, 'zoom=-1: outside 0 .. 16777215'),
    ({'focus': 1 << 24}, 'focus=16777216: outside 0 .. 16777215'),
    ({'zoom': 1.5}, 'zoom=1.5: must be an integer'),
    ({'camera_id': 256}, 'camera_id=256: outside 0 .. 255'),
    ({'spare': 1 << 16}, 'spare=65536: outside 0 .. 65535'),
])
def test_encode_rejects_values_that_do_not_fit(change, message):
    packet = dataclasses.replace(FreeDPacket(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0), **change)
    with pytest.raises(FreeDError, match=message):
        encode(packet)


def test_encode_accepts_both_ends_of_the_range():
    packet = FreeDPacket(0, -256.0, 8388607 / 32768, 0.0, -131.072, 8388607 / 64000, 0.0,
                         0, (1 << 24) - 1)
    assert decode(encode(packet)) == packet


def test_pose_round_trip_through_bytes_within_quantisation():
    rng = np.random.default_rng(11)
    rotations = Rotation.random(300, random_state=12)
    for rotation in rotations:
        position = rng.uniform(-100.0, 100.0, 3)
        quaternion = rotation.as_quat()
        packet = pose_to_packet(position, quaternion, camera_id=3, zoom=1234, focus=5678)
        back = decode(encode(packet))
        assert (back.camera_id, back.zoom, back.focus) == (3, 1234, 5678)
        p, q = packet_to_pose(back)
        assert np.max(np.abs(p - position)) <= POSITION_STEP / 2 + 1e-12
        # Each of three Euler angles is off by at most half a step.
        assert np.degrees(angle_between(q, quaternion)) <= 1.5 * ANGLE_STEP + 1e-9


def spec_camera_axes(pan, tilt, roll):
    """Forward, left and up of the camera in FreeD axes, from the free-d manual's words."""
    pan, tilt, roll = np.radians([pan, tilt, roll])
    # Pan 0 looks along +Y; positive pan turns clockwise seen from above (towards +X).
    forward = np.array([np.sin(pan) * np.cos(tilt), np.cos(pan) * np.cos(tilt), np.sin(tilt)])
    right_level = np.array([np.cos(pan), -np.sin(pan), 0.0])
    up_unrolled = np.cross(right_level, forward)
    # Positive roll is clockwise seen from behind: the top moves towards the right.
    up = np.cos(roll) * up_unrolled + np.sin(roll) * right_level
    left = np.cross(up, forward)
    return forward, left, up


def test_default_mapping_matches_the_free_d_axis_definitions():
    freed_to_rep = np.array([[0, 1, 0], [-1, 0, 0], [0, 0, 1]])  # x = Y, y = -X, z = Z
    rng = np.random.default_rng(5)
    for _ in range(200):
        pan, tilt, roll = rng.uniform(-180, 180), rng.uniform(-89, 89), rng.uniform(-180, 180)
        packet = FreeDPacket(0, pan, tilt, roll, 1.0, 2.0, 3.0, 0, 0)
        position, quaternion = packet_to_pose(packet)
        np.testing.assert_allclose(position, [2.0, -1.0, 3.0])
        matrix = Rotation.from_quat(quaternion).as_matrix()
        for column, expected in zip(matrix.T, spec_camera_axes(pan, tilt, roll)):
            np.testing.assert_allclose(column, freed_to_rep @ expected, atol=1e-12)


def test_default_mapping_sign_conventions():
    def yaw_pitch_roll(**angles):
        packet = FreeDPacket(0, angles.get('pan', 0.0), angles.get('tilt', 0.0),
                             angles.get('roll', 0.0), 0.0, 0.0, 0.0, 0, 0)
        return Rotation.from_quat(packet_to_pose(packet)[1]).as_euler('ZYX', degrees=True)

    np.testing.assert_allclose(yaw_pitch_roll(pan=30.0), [-30.0, 0.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(yaw_pitch_roll(tilt=20.0), [0.0, -20.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(yaw_pitch_roll(roll=10.0), [0.0, 0.0, 10.0], atol=1e-9)


def test_custom_mapping_round_trips():
    mapping = AxisMapping(position_axes=('x', 'z', 'y'), position_signs=(-1, 1, 1),
                          euler_axes='ZXY', angle_signs=(1, -1, -1))
    packet = FreeDPacket(0, 40.0, -20.0, 5.0, 1.5, -2.0, 0.25, 0, 0)
    position, quaternion = packet_to_pose(packet, mapping)
    np.testing.assert_allclose(position, [-1.5, 0.25, -2.0])
    back = pose_to_packet(position, quaternion, mapping)
    for name in ('pan_deg', 'tilt_deg', 'roll_deg', 'x_m', 'y_m', 'z_m'):
        assert getattr(back, name) == pytest.approx(getattr(packet, name), abs=1e-9)


@pytest.mark.parametrize('kwargs, message', [
    ({'position_axes': ('x', 'x', 'z')}, 'permutation of x, y, z'),
    ({'position_signs': (1, 2, 1)}, 'position_signs must be three values'),
    ({'angle_signs': (1, -1)}, 'angle_signs must be three values'),
    ({'euler_axes': 'ZYZX'}, "euler_axes 'ZYZX' is invalid"),
    ({'euler_axes': 'ZyX'}, "euler_axes 'ZyX' is invalid"),
])
def test_invalid_mapping_is_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AxisMapping(**kwargs)


@pytest.mark.parametrize('position, quaternion, message', [
    ([0.0, np.nan, 0.0], [0, 0, 0, 1], 'non-finite position'),
    ([0.0, 0.0, 0.0], [0, 0, 0, 0], 'zero/non-finite'),
    ([0.0, 0.0, 0.0], [0, np.inf, 0, 1], 'zero/non-finite'),
    ([0.0, 0.0], [0, 0, 0, 1], r'expected position \(3,\)'),
])
def test_bad_pose_is_rejected(position, quaternion, message):
    with pytest.raises(FreeDError, match=message):
        pose_to_packet(position, quaternion)


def test_non_finite_packet_is_rejected_by_packet_to_pose():
    with pytest.raises(FreeDError, match='non-finite'):
        packet_to_pose(FreeDPacket(0, math.nan, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0))


def test_unnormalised_quaternion_is_normalised():
    packet = pose_to_packet([0.0, 0.0, 0.0], [0.0, 0.0, 2.0 * math.sin(0.25), 2.0 * math.cos(
        0.25)])
    assert packet.pan_deg == pytest.approx(-math.degrees(0.5))

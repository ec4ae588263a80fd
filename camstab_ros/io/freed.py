"""
FreeD D1 camera-tracking messages: 29-byte codec and the mapping to REP 103 poses.

Wire format (Vinten free-d, type D1), big-endian, 29 bytes:

    0      0xD1 message type          14-16  Y      signed 24-bit, 1/64 mm
    1      camera id                  17-19  Z      signed 24-bit, 1/64 mm (height)
    2-4    pan   signed 24-bit,       20-22  zoom   unsigned 24-bit encoder counts
    5-7    tilt  1/32768 degree       23-25  focus  unsigned 24-bit encoder counts
    8-10   roll                       26-27  spare (user defined; often iris)
    11-13  X     signed 24-bit,       28     checksum = (0x40 - sum(bytes 0..27)) mod 256
                 1/64 mm

Axis conventions of the free-d manual (V1.4.4, appendix B): right-handed studio axes, X
and Y horizontal, Z up. Pan 0 looks along +Y; positive pan turns right (clockwise seen
from above). Positive tilt looks up. Positive roll is clockwise seen from behind.
"""
from dataclasses import dataclass
import math

import numpy as np
from scipy.spatial.transform import Rotation


PACKET_SIZE = 29
MESSAGE_TYPE = 0xD1
ANGLE_UNITS_PER_DEG = 32768
POSITION_UNITS_PER_M = 64000
_INT24_MIN = -(1 << 23)
_INT24_MAX = (1 << 23) - 1
_UINT24_MAX = (1 << 24) - 1
_UINT16_MAX = (1 << 16) - 1


class FreeDError(ValueError):
    """A FreeD message that cannot be decoded or a value that cannot be encoded."""


@dataclass
class FreeDPacket:
    """One D1 message in physical units (degrees, metres; zoom/focus raw encoder counts)."""

    camera_id: int
    pan_deg: float
    tilt_deg: float
    roll_deg: float
    x_m: float
    y_m: float
    z_m: float
    zoom: int
    focus: int
    spare: int = 0


def checksum(data):
    """Compute the FreeD checksum of the message bytes before the checksum byte."""
    return (0x40 - sum(data)) % 256


def _fixed(name, value, units_per_unit):
    if not math.isfinite(value):
        raise FreeDError(f'cannot encode {name}={value}: not a finite number')
    count = round(value * units_per_unit)
    if not _INT24_MIN <= count <= _INT24_MAX:
        low, high = _INT24_MIN / units_per_unit, _INT24_MAX / units_per_unit
        raise FreeDError(
            f'cannot encode {name}={value}: outside the signed 24-bit range '
            f'{low:g} .. {high:g}')
    return count.to_bytes(3, 'big', signed=True)


def _unsigned(name, value, maximum, size):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise FreeDError(f'cannot encode {name}={value!r}: must be an integer')
    if not 0 <= value <= maximum:
        raise FreeDError(f'cannot encode {name}={value}: outside 0 .. {maximum}')
    return int(value).to_bytes(size, 'big')


def encode(packet):
    """Return the 29-byte D1 message for packet; FreeDError if a value does not fit."""
    body = b''.join([
        bytes([MESSAGE_TYPE]),
        _unsigned('camera_id', packet.camera_id, 255, 1),
        _fixed('pan_deg', packet.pan_deg, ANGLE_UNITS_PER_DEG),
        _fixed('tilt_deg', packet.tilt_deg, ANGLE_UNITS_PER_DEG),
        _fixed('roll_deg', packet.roll_deg, ANGLE_UNITS_PER_DEG),
        _fixed('x_m', packet.x_m, POSITION_UNITS_PER_M),
        _fixed('y_m', packet.y_m, POSITION_UNITS_PER_M),
        _fixed('z_m', packet.z_m, POSITION_UNITS_PER_M),
        _unsigned('zoom', packet.zoom, _UINT24_MAX, 3),
        _unsigned('focus', packet.focus, _UINT24_MAX, 3),
        _unsigned('spare', packet.spare, _UINT16_MAX, 2),
    ])
    return body + bytes([checksum(body)])


def decode(data):
    """Decode one D1 message; FreeDError on wrong length, type or checksum."""
    data = bytes(data)
    if len(data) != PACKET_SIZE:
        raise FreeDError(f'FreeD D1 message must be {PACKET_SIZE} bytes, got {len(data)}')
    if data[0] != MESSAGE_TYPE:
        raise FreeDError(
            f'FreeD message type 0x{data[0]:02X} is not supported (expected 0xD1)')
    expected = checksum(data[:-1])
    if data[-1] != expected:
        raise FreeDError(
            f'FreeD checksum mismatch: expected 0x{expected:02X}, got 0x{data[-1]:02X}')

    def signed(offset, units_per_unit):
        return int.from_bytes(data[offset:offset + 3], 'big', signed=True) / units_per_unit

    return FreeDPacket(
        camera_id=data[1],
        pan_deg=signed(2, ANGLE_UNITS_PER_DEG),
        tilt_deg=signed(5, ANGLE_UNITS_PER_DEG),
        roll_deg=signed(8, ANGLE_UNITS_PER_DEG),
        x_m=signed(11, POSITION_UNITS_PER_M),
        y_m=signed(14, POSITION_UNITS_PER_M),
        z_m=signed(17, POSITION_UNITS_PER_M),
        zoom=int.from_bytes(data[20:23], 'big'),
        focus=int.from_bytes(data[23:26], 'big'),
        spare=int.from_bytes(data[26:28], 'big'),
    )


_AXIS_INDEX = {'x': 0, 'y': 1, 'z': 2}


@dataclass(frozen=True)
class AxisMapping:
    """
    How FreeD axes and angles become a REP 103 pose (x forward, y left, z up; metres).

    position_axes[i] names the FreeD axis ('x', 'y' or 'z') that feeds REP 103 axis i and
    position_signs[i] its sign. The orientation is
    Rotation.from_euler(euler_axes, angle_signs * (pan, tilt, roll), degrees=True): pan
    about the first axis, tilt about the second, roll about the third (upper-case letters:
    intrinsic, i.e. each about the already-rotated camera axes, as on a pan/tilt head).
    The quaternion is that of the camera body (x along the optical axis, y left, z up),
    not of a REP 103 '_optical' frame.

    The default matches Unreal Engine's LiveLink FreeD source, which feeds FreeD Y to its
    forward axis, FreeD X to its right axis and Z to up, and pan/tilt/roll unchanged to
    yaw/pitch/roll of its left-handed frame. In the right-handed REP 103 frame that reads:
    x = Y, y = -X, z = Z (a proper rotation: FreeD's pan-0 direction +Y becomes forward);
    yaw = -pan (FreeD pan turns right, clockwise from above, which is negative about +z);
    pitch = -tilt (FreeD tilt up; a positive turn about the left-pointing y axis pitches
    the nose down); roll = +roll (clockwise seen from behind is positive about the
    forward x axis).
    """

    position_axes: tuple = ('y', 'x', 'z')
    position_signs: tuple = (1, -1, 1)
    euler_axes: str = 'ZYX'
    angle_signs: tuple = (-1, -1, 1)

    def __post_init__(self):
        if sorted(self.position_axes) != ['x', 'y', 'z']:
            raise ValueError(
                f'position_axes must be a permutation of x, y, z, got {self.position_axes}')
        for name in ('position_signs', 'angle_signs'):
            signs = getattr(self, name)
            if len(signs) != 3 or any(s not in (1, -1) for s in signs):
                raise ValueError(f'{name} must be three values of +1 or -1, got {signs}')
        try:
            Rotation.from_euler(self.euler_axes, [0.0, 0.0, 0.0])
        except ValueError as error:
            raise ValueError(f'euler_axes {self.euler_axes!r} is invalid: {error}') from None


DEFAULT_MAPPING = AxisMapping()


def packet_to_pose(packet, mapping=DEFAULT_MAPPING):
    """REP 103 pose of a packet: position (3,) in metres, quaternion (4,) as x, y, z, w."""
    freed_xyz = np.array([packet.x_m, packet.y_m, packet.z_m], dtype=float)
    angles = np.array([packet.pan_deg, packet.tilt_deg, packet.roll_deg], dtype=float)
    if not (np.all(np.isfinite(freed_xyz)) and np.all(np.isfinite(angles))):
        raise FreeDError(f'packet has non-finite position or angles: {packet}')
    position = np.array([
        sign * freed_xyz[_AXIS_INDEX[axis]]
        for axis, sign in zip(mapping.position_axes, mapping.position_signs)])
    rotation = Rotation.from_euler(
        mapping.euler_axes, angles * np.asarray(mapping.angle_signs), degrees=True)
    return position, rotation.as_quat()


def pose_to_packet(position, quaternion, mapping=DEFAULT_MAPPING, camera_id=0, zoom=0,
                   focus=0, spare=0):
    """
    Convert a REP 103 pose to a FreeD packet (inverse of packet_to_pose).

    The packet's angles are within +-180 degrees.
    """
    position = np.asarray(position, dtype=float)
    quaternion = np.asarray(quaternion, dtype=float)
    if position.shape != (3,) or quaternion.shape != (4,):
        raise FreeDError(
            f'expected position (3,) and quaternion (4,), got {position.shape} and '
            f'{quaternion.shape}')
    norm = np.linalg.norm(quaternion)
    if not (np.all(np.isfinite(position)) and math.isfinite(norm)) or norm < 1e-9:
        raise FreeDError(
            f'cannot convert pose: non-finite position {position} or zero/non-finite '
            f'quaternion {quaternion}')
    freed_xyz = np.empty(3)
    for value, axis, sign in zip(position, mapping.position_axes, mapping.position_signs):
        freed_xyz[_AXIS_INDEX[axis]] = sign * value
    angles = Rotation.from_quat(quaternion / norm).as_euler(mapping.euler_axes, degrees=True)
    pan, tilt, roll = angles * np.asarray(mapping.angle_signs)
    return FreeDPacket(
        camera_id=camera_id, pan_deg=float(pan), tilt_deg=float(tilt), roll_deg=float(roll),
        x_m=float(freed_xyz[0]), y_m=float(freed_xyz[1]), z_m=float(freed_xyz[2]),
        zoom=zoom, focus=focus, spare=spare)

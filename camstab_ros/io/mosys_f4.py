"""
Mo-Sys F4 tracking packets (StarTracker output and its recorded .f4 takes).

Packet: 0xF4, camera id, axis count N, status, N axis blocks of 5 bytes (axis id, axis
status, 3 data bytes big-endian), checksum = (0x40 - sum(preceding bytes)) mod 256.
A recorded take is packets concatenated with nothing between them.

Axis values, as in Mo-Sys' F4.h and the SMPTE RIS-OSVP camdkit reader:
- pan 0x01, tilt 0x02, roll 0x13: signed 24-bit in 1/1000 degree;
- X 0x05, Y 0x06, height 0x07: signed 24-bit in 1/100 mm (F4.h: "1/100 of mm
  resolution"); divided by 1000 as camdkit does, that is centimetres;
- focus 0x03, zoom 0x04: the low 16 data bits / 65536 (normalised 0..1);
- timecode 0xF8: the 24 data bits are hours, minutes, seconds, frames, 6 bits each from
  the most significant end (hhhhhh mmmmmm ssssss ffffff); bits 5-6 of the axis status give
  the rate: 0 = 24, 1 = 25, 2 = 30, 3 = 60 fps;
- tracking status 0xF9: bits 4-7 of the middle data byte index TRACKING_STATUS.
Packet status byte: bits 0-3 a sequence counter, bit 4 recording, bit 5 genlock locked.
Pan, tilt, roll, X, Y and height are taken to follow the FreeD conventions (StarTracker
sends the same pose as FreeD; no public statement of F4 signs was found), so
f4_to_freed / f4_to_pose reuse the FreeD AxisMapping.

Recorded takes are decoded leniently by default: a corrupt or truncated stretch is
skipped, logged with its file offset and counted on the returned take (never silently);
strict=True raises F4Error at the first bad byte instead. After a bad stretch decoding
resumes at the next packet whose checksum passes and which is followed by another valid
packet or the end of the data (so a stray 0xF4 in axis data is not taken for a packet).
"""
from dataclasses import dataclass, field
import logging
from pathlib import Path
from typing import Dict, NamedTuple, Optional, Tuple

from camstab_ros.io.freed import checksum, DEFAULT_MAPPING, FreeDPacket, packet_to_pose


COMMAND_BYTE = 0xF4
AXIS_PAN, AXIS_TILT, AXIS_FOCUS, AXIS_ZOOM = 0x01, 0x02, 0x03, 0x04
AXIS_X, AXIS_Y, AXIS_HEIGHT, AXIS_ROLL = 0x05, 0x06, 0x07, 0x13
AXIS_TIMECODE, AXIS_TRACKING_STATUS = 0xF8, 0xF9
ANGLE_UNITS_PER_DEG = 1000
LINEAR_UNITS_PER_CM = 1000
METRES_PER_CM = 0.01
LENS_FULL_SCALE = 65536
TIMECODE_RATES = (24.0, 25.0, 30.0, 60.0)
TRACKING_STATUS = (
    'Undefined', 'Tracking', 'Optical Good', 'Optical Acceptable', 'Optical Unreliable',
    'Optical Unstable', 'Optical Lost', 'Lost Too Few Stars', 'Location Searching',
    'Busy or Waiting', 'Busy Loading Map', 'No Map Loaded', 'Test Signal',
    'Mechanical Encoders Only', 'I/O Error', 'Internal Error')

_HEADER_SIZE = 4
_AXIS_SIZE = 5
_ANGLE_FIELDS = {AXIS_PAN: 'pan_deg', AXIS_TILT: 'tilt_deg', AXIS_ROLL: 'roll_deg'}
_LINEAR_FIELDS = {AXIS_X: 'x', AXIS_Y: 'y', AXIS_HEIGHT: 'height'}

_log = logging.getLogger(__name__)


class F4Error(ValueError):
    """A malformed F4 stream; offset is the byte offset of the bad packet (or None)."""

    def __init__(self, message, offset=None, source='<bytes>'):
        where = source if offset is None else f'{source} at offset {offset} (0x{offset:X})'
        super().__init__(f'{where}: {message}')
        self.offset = offset
        self.source = source


class Timecode(NamedTuple):
    hours: int
    minutes: int
    seconds: int
    frames: int

    def __str__(self):
        return f'{self.hours:02d}:{self.minutes:02d}:{self.seconds:02d}:{self.frames:02d}'


@dataclass
class F4Packet:
    """
    One decoded packet. Positions in centimetres (x_m etc. in metres); None if absent.

    axes holds every axis block as {axis_id: (axis_status, 24-bit unsigned data)}.
    """

    camera_id: int
    status: int
    pan_deg: Optional[float] = None
    tilt_deg: Optional[float] = None
    roll_deg: Optional[float] = None
    x: Optional[float] = None
    y: Optional[float] = None
    height: Optional[float] = None
    zoom: Optional[float] = None
    focus: Optional[float] = None
    timecode: Optional[Timecode] = None
    frame_rate: Optional[float] = None
    axes: Dict[int, Tuple[int, int]] = field(default_factory=dict)

    @property
    def x_m(self):
        return None if self.x is None else self.x * METRES_PER_CM

    @property
    def y_m(self):
        return None if self.y is None else self.y * METRES_PER_CM

    @property
    def height_m(self):
        return None if self.height is None else self.height * METRES_PER_CM

    @property
    def sequence(self):
        """Return the 4-bit packet counter in the status byte."""
        return self.status & 0x0F

    @property
    def recording(self):
        return bool(self.status & 0x10)

    @property
    def genlocked(self):
        return bool(self.status & 0x20)

    @property
    def tracking_status(self):
        """Return the StarTracker tracking state name (axis 0xF9), None if the axis is absent."""
        if AXIS_TRACKING_STATUS not in self.axes:
            return None
        return TRACKING_STATUS[(self.axes[AXIS_TRACKING_STATUS][1] >> 12) & 0x0F]


@dataclass
class F4Skip:
    """A stretch of a stream that was not a valid packet."""

    offset: int
    length: int
    reason: str


class F4Take(list):
    """The packets of a recorded take (a list of F4Packet) and what was skipped in it."""

    def __init__(self, packets, skipped, source):
        super().__init__(packets)
        self.skipped = skipped
        self.source = source

    def summary(self):
        lost = sum(skip.length for skip in self.skipped)
        parts = [f'{self.source}: {len(self)} packets decoded, {len(self.skipped)} bad '
                 f'stretches skipped ({lost} bytes)']
        parts += [f'offset {skip.offset}: {skip.reason}' for skip in self.skipped[:5]]
        if len(self.skipped) > 5:
            parts.append('...')
        return '; '.join(parts)


def _problem(data, offset):
    """Return (size, None) if a valid packet starts at offset, else (size or None, reason)."""
    remaining = len(data) - offset
    if data[offset] != COMMAND_BYTE:
        return None, f'expected packet start 0xF4, got 0x{data[offset]:02X}'
    if remaining < _HEADER_SIZE:
        return None, f'truncated packet header: {remaining} of {_HEADER_SIZE} bytes'
    count = data[offset + 2]
    if count == 0:
        return None, 'packet has zero axes'
    size = _HEADER_SIZE + count * _AXIS_SIZE + 1
    if remaining < size:
        return None, f'truncated packet: {count} axes need {size} bytes, {remaining} left'
    expected = checksum(data[offset:offset + size - 1])
    got = data[offset + size - 1]
    if got != expected:
        return size, f'checksum mismatch: expected 0x{expected:02X}, got 0x{got:02X}'
    ids = data[offset + _HEADER_SIZE:offset + size - 1:_AXIS_SIZE]
    if len(set(ids)) != len(ids):
        return size, 'an axis id appears twice in one packet'
    return size, None


def _valid(data, offset):
    return offset == len(data) or _problem(data, offset)[1] is None


def _resync(data, offset):
    """Offset of the next trustworthy packet start after a bad packet at offset."""
    # A packet start is trusted only if the packet after it is valid too, so a 0xF4 inside
    # axis data rarely fakes one (about 1 in 65536 by chance).
    start = offset + 1
    while True:
        start = data.find(bytes([COMMAND_BYTE]), start)
        if start < 0:
            return len(data)
        size, reason = _problem(data, start)
        if reason is None and _valid(data, start + size):
            return start
        start += 1


def _signed(value):
    return value - (1 << 24) if value & 0x800000 else value


def _decode(data, offset, size):
    packet = F4Packet(camera_id=data[offset + 1], status=data[offset + 3])
    for block in range(offset + _HEADER_SIZE, offset + size - 1, _AXIS_SIZE):
        axis_id, axis_status = data[block], data[block + 1]
        value = int.from_bytes(data[block + 2:block + 5], 'big')
        packet.axes[axis_id] = (axis_status, value)
        if axis_id in _ANGLE_FIELDS:
            setattr(packet, _ANGLE_FIELDS[axis_id], _signed(value) / ANGLE_UNITS_PER_DEG)
        elif axis_id in _LINEAR_FIELDS:
            setattr(packet, _LINEAR_FIELDS[axis_id], _signed(value) / LINEAR_UNITS_PER_CM)
        elif axis_id == AXIS_ZOOM:
            packet.zoom = (value & 0xFFFF) / LENS_FULL_SCALE
        elif axis_id == AXIS_FOCUS:
            packet.focus = (value & 0xFFFF) / LENS_FULL_SCALE
        elif axis_id == AXIS_TIMECODE:
            packet.timecode = Timecode(
                value >> 18, (value >> 12) & 0x3F, (value >> 6) & 0x3F, value & 0x3F)
            packet.frame_rate = TIMECODE_RATES[(axis_status >> 5) & 0x03]
    return packet


def _scan(data, source, strict):
    """Yield F4Packet for each valid packet and F4Skip for each bad stretch."""
    offset = 0
    while offset < len(data):
        size, reason = _problem(data, offset)
        if reason is None:
            yield _decode(data, offset, size)
            offset += size
            continue
        if strict:
            raise F4Error(reason, offset, source)
        end = _resync(data, offset)
        _log.warning('%s: skipped %d bytes at offset %d: %s', source, end - offset, offset,
                     reason)
        yield F4Skip(offset, end - offset, reason)
        offset = end


def iter_packets(data, strict=False, source='<bytes>'):
    """
    Yield the F4Packets of a byte stream, skipping (and logging) bad stretches.

    With strict=True the first bad stretch raises F4Error naming its offset.
    """
    data = bytes(data)
    if not data:
        raise F4Error('no data: an F4 stream needs at least one packet', None, source)
    for item in _scan(data, source, strict):
        if isinstance(item, F4Packet):
            yield item


def read_f4(path, strict=False):
    """
    Decode a recorded .f4 take into an F4Take (a list of F4Packet).

    Bad stretches are skipped, logged and listed in take.skipped (strict=True raises
    F4Error instead). A file without a single valid packet raises F4Error.
    """
    source = str(path)
    data = Path(path).read_bytes()
    if not data:
        raise F4Error('file is empty: no F4 packets', None, source)
    packets, skipped = [], []
    for item in _scan(data, source, strict):
        (packets if isinstance(item, F4Packet) else skipped).append(item)
    take = F4Take(packets, skipped, source)
    if not packets:
        raise F4Error(f'no valid F4 packet in {len(data)} bytes ({take.summary()})', 0,
                      source)
    if skipped:
        _log.warning('%s', take.summary())
    return take


def f4_to_freed(packet):
    """
    Return the packet as a FreeD packet (same angles; cm -> m; 16-bit lens values as counts).

    Zoom and focus become the 16-bit encoder counts StarTracker sends over FreeD (0 when
    the axis is absent). Raises F4Error if a pose axis is missing.
    """
    names = list(_ANGLE_FIELDS.values()) + list(_LINEAR_FIELDS.values())
    missing = [name for name in names if getattr(packet, name) is None]
    if missing:
        raise F4Error('packet lacks pose axes ' + ', '.join(missing))
    return FreeDPacket(
        camera_id=packet.camera_id, pan_deg=packet.pan_deg, tilt_deg=packet.tilt_deg,
        roll_deg=packet.roll_deg, x_m=packet.x_m, y_m=packet.y_m, z_m=packet.height_m,
        zoom=round((packet.zoom or 0.0) * LENS_FULL_SCALE),
        focus=round((packet.focus or 0.0) * LENS_FULL_SCALE))


def f4_to_pose(packet, mapping=DEFAULT_MAPPING):
    """REP 103 pose of an F4 packet (metres, quaternion x, y, z, w) via the FreeD mapping."""
    return packet_to_pose(f4_to_freed(packet), mapping)

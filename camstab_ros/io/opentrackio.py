"""
OpenTrackIO (SMPTE RIS-OSVP): samples in JSON or CBOR, the OTrk packet, poses in REP 103.

Packet: a 16-byte header, big-endian, then one segment of the encoded sample:

    0-3    'OTrk' identifier          8-11   segment offset in the payload (uint32)
    4      reserved (0)               12-13  last-segment flag (top bit) + segment length
    5      encoding: 1 JSON, 2 CBOR   14-15  Fletcher-16 of bytes 0-13 and the segment
    6-7    sequence number (uint16, increments per sample, wraps)

A payload longer than MAX_SEGMENT (1500 - 16 bytes) goes out in several packets of one
sequence number; `Reassembler` puts them back together, in any arrival order, and hands
on a sample only when it is whole: a lost, corrupt or inconsistent segment drops the
sample, counted, never half-applied.

Pose: `transforms` are composed in order (each relative to the one before); the result is
the camera sensor relative to the stage origin. Stage axes: right-handed, Z up, Y forward
(the camera's view at pan = tilt = roll = 0), X to camera-right; rotation intrinsic Z-X-Y
(pan about Z, tilt about X, roll about Y), positive by the right-hand rule. These are
FreeD's studio axes, so a pose maps to REP 103 the same way as FreeD's (x = Y, y = -X,
z = Z), the camera body x forward, y left, z up; only pan's sign differs: OpenTrackIO's
positive pan turns left (counter-clockwise seen from above), FreeD's turns right.
`scale` is passed through and not applied to the pose (a camera transform has none).
"""
from dataclasses import dataclass
import io
import json
import math
import struct
import uuid
import warnings

import cbor2
import numpy as np
from scipy.spatial.transform import Rotation


IDENTIFIER = b'OTrk'
ENCODINGS = {'json': 0x01, 'cbor': 0x02}
HEADER = struct.Struct('>4sBBHIHH')
HEADER_SIZE = HEADER.size  # 16
MAX_DATAGRAM = 1500
MAX_SEGMENT = MAX_DATAGRAM - HEADER_SIZE  # 1484
LAST_SEGMENT = 0x8000
DEFAULT_PORT = 55555
PROTOCOL = {'name': 'OpenTrackIO', 'version': [1, 0, 0]}
# A sample larger than this is refused (a real one is a few kB).
MAX_PAYLOAD = 1 << 20
# Incomplete samples kept waiting for their segments; older ones are dropped, counted.
MAX_PENDING = 4
_UUID_URN = 'urn:uuid:'
# Stage axes -> REP 103 axes (x = Y, y = -X, z = Z): a quarter turn about z.
_STAGE_TO_REP103 = Rotation.from_matrix([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
# Drop reasons of a datagram (the header) and of a sample (payload and content).
PACKET_DROP_REASONS = ('truncated_header', 'wrong_identifier', 'unknown_encoding',
                       'bad_checksum', 'wrong_length')
SAMPLE_DROP_REASONS = ('incomplete_sample', 'inconsistent_segments', 'too_large',
                       'duplicate', 'garbage_payload', 'invalid_sample', 'no_pose')


class OpenTrackIOError(ValueError):
    """A packet or sample that cannot be used; `reason` is one of the drop reasons."""

    def __init__(self, reason, detail):
        super().__init__(f'{reason}: {detail}')
        self.reason = reason


def multicast_group(source_number):
    """Return the multicast address of OpenTrackIO source 1..200: 239.135.1.<number>."""
    if isinstance(source_number, bool) or not 1 <= int(source_number) <= 200:
        raise ValueError(f'OpenTrackIO source number must be 1..200, got {source_number}')
    return f'239.135.1.{int(source_number)}'


def fletcher16(data):
    """Return the Fletcher-16 checksum of data: (sum2 << 8) | sum1, both modulo 256."""
    # Closed form of the byte loop (sum1 += b; sum2 += sum1, modulo 256): byte i of n
    # adds to sum2 n - i times. 15x faster than the loop on a 1500-byte packet.
    values = np.frombuffer(bytes(data), dtype=np.uint8).astype(np.int64)
    sum1 = int(values.sum()) % 256
    sum2 = int(np.dot(np.arange(len(values), 0, -1), values)) % 256
    return (sum2 << 8) | sum1


# -- payload ---------------------------------------------------------------------------

def encode_payload(sample, encoding='json'):
    """Return the sample (a dict) encoded as compact UTF-8 JSON or as CBOR."""
    if encoding == 'json':
        return json.dumps(sample, separators=(',', ':'), allow_nan=False).encode()
    if encoding == 'cbor':
        return cbor2.dumps(sample)
    raise ValueError(f'OpenTrackIO encoding must be json or cbor, got {encoding!r}')


def decode_payload(payload, encoding='json'):
    """Return the sample a payload holds; OpenTrackIOError('garbage_payload') if none."""
    try:
        if encoding == 'json':
            sample = json.loads(bytes(payload).decode('utf-8'))
        elif encoding == 'cbor':
            sample = cbor2.loads(bytes(payload))
        else:
            raise ValueError(f'unknown encoding {encoding!r}')
    except (ValueError, UnicodeDecodeError, cbor2.CBORDecodeError, RecursionError) as exc:
        raise OpenTrackIOError('garbage_payload', f'not {encoding}: {exc}') from None
    if not isinstance(sample, dict):
        raise OpenTrackIOError('garbage_payload',
                               f'a sample is an object, got {type(sample).__name__}')
    return sample


# -- packets ---------------------------------------------------------------------------

@dataclass
class Segment:
    """One packet: a segment of a sample's payload."""

    encoding: str
    sequence: int
    offset: int
    last: bool
    data: bytes


def packets(payload, encoding, sequence):
    """Return the datagrams that carry payload: one per MAX_SEGMENT bytes."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f'payload of {len(payload)} bytes is over {MAX_PAYLOAD}')
    code = ENCODINGS[encoding]
    out = []
    for offset in range(0, max(len(payload), 1), MAX_SEGMENT):
        data = payload[offset:offset + MAX_SEGMENT]
        last = offset + MAX_SEGMENT >= len(payload)
        head = HEADER.pack(IDENTIFIER, 0, code, sequence % 65536, offset,
                           (LAST_SEGMENT if last else 0) | len(data), 0)[:-2]
        out.append(head + struct.pack('>H', fletcher16(head + data)) + data)
    return out


def parse_packet(datagram):
    """Return the Segment of one datagram; OpenTrackIOError with the drop reason."""
    datagram = bytes(datagram)
    if len(datagram) < HEADER_SIZE:
        raise OpenTrackIOError('truncated_header',
                               f'{len(datagram)} bytes, a header is {HEADER_SIZE}')
    ident, _, code, sequence, offset, flag_length, check = HEADER.unpack_from(datagram)
    if ident != IDENTIFIER:
        raise OpenTrackIOError('wrong_identifier', f'{ident!r} is not {IDENTIFIER!r}')
    encoding = {v: k for k, v in ENCODINGS.items()}.get(code)
    if encoding is None:
        raise OpenTrackIOError('unknown_encoding', f'encoding byte 0x{code:02X}')
    data = datagram[HEADER_SIZE:]
    expected = fletcher16(datagram[:HEADER_SIZE - 2] + data)
    if check != expected:
        raise OpenTrackIOError('bad_checksum',
                               f'Fletcher-16 0x{check:04X}, computed 0x{expected:04X}')
    length = flag_length & ~LAST_SEGMENT
    if length != len(data):
        raise OpenTrackIOError('wrong_length',
                               f'header says {length} bytes, segment has {len(data)}')
    return Segment(encoding, sequence, offset, bool(flag_length & LAST_SEGMENT), data)


class Reassembler:
    """
    Whole samples from segments, in any arrival order; incomplete ones dropped, counted.

    `add(segment)` returns (encoding, payload) once the segments of its sequence number
    cover the payload from 0 to its last segment without a gap, else None. At most
    MAX_PENDING samples wait; a newer one pushes the oldest out ('incomplete_sample').
    `dropped` counts samples by reason.
    """

    def __init__(self):
        self._pending = {}           # (encoding, sequence) -> {offset: Segment}
        self._done = []              # keys of the last completed samples
        self.dropped = dict.fromkeys(('incomplete_sample', 'inconsistent_segments',
                                      'too_large', 'duplicate'), 0)

    def add(self, segment):
        """Add one segment; (encoding, payload) when its sample is whole, else None."""
        key = (segment.encoding, segment.sequence)
        if segment.last and segment.offset == 0:
            return self._complete(key, segment.data)  # the common single-packet sample
        if segment.offset + len(segment.data) > MAX_PAYLOAD:
            self._discard(key, 'too_large')
            return None
        if key in self._done:
            self.dropped['duplicate'] += 1
            return None
        parts = self._pending.setdefault(key, {})
        old = parts.get(segment.offset)
        if old is not None and old.data != segment.data:
            self._discard(key, 'inconsistent_segments')
            return None
        parts[segment.offset] = segment
        while len(self._pending) > MAX_PENDING:
            self._discard(next(iter(self._pending)), 'incomplete_sample')
        return self._try_complete(key)

    def _try_complete(self, key):
        parts = self._pending[key]
        if not any(s.last for s in parts.values()):
            return None
        end = 0
        for offset in sorted(parts):
            if offset > end:
                return None  # a gap: wait for the missing segment
            if offset < end:
                self._discard(key, 'inconsistent_segments')  # overlapping segments
                return None
            end = offset + len(parts[offset].data)
            if parts[offset].last:
                del self._pending[key]
                return self._complete(key, b''.join(parts[o].data for o in sorted(parts)))
        return None

    def _complete(self, key, payload):
        if key in self._done:
            self.dropped['duplicate'] += 1
            return None
        self._done = (self._done + [key])[-16:]
        return key[0], payload

    def _discard(self, key, reason):
        self._pending.pop(key, None)
        self.dropped[reason] += 1

    def flush(self):
        """Drop every incomplete sample (the stream ended); counted."""
        for key in list(self._pending):
            self._discard(key, 'incomplete_sample')


# -- samples ---------------------------------------------------------------------------

def _number(value, where):
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value):
        raise OpenTrackIOError('invalid_sample', f'{where} must be a finite number, '
                               f'got {value!r}')
    return float(value)


def _integer(value, where, low, high):
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise OpenTrackIOError('invalid_sample', f'{where} must be an integer in '
                               f'{low}..{high}, got {value!r}')
    return value


def _object(sample, key, where):
    value = sample.get(key)
    if value is not None and not isinstance(value, dict):
        raise OpenTrackIOError('invalid_sample', f'{where}{key} must be an object')
    return value


def sample_transforms(sample):
    """Return the checked transforms of a sample: [(translation (3,), (pan, tilt, roll))]."""
    transforms = sample.get('transforms')
    if transforms is None:
        raise OpenTrackIOError('no_pose', 'the sample has no transforms (no camera pose)')
    if not isinstance(transforms, list) or not transforms:
        raise OpenTrackIOError('invalid_sample', 'transforms must be a list of at least '
                               'one transform')
    out = []
    for i, transform in enumerate(transforms):
        where = f'transforms[{i}]'
        if not isinstance(transform, dict):
            raise OpenTrackIOError('invalid_sample', f'{where} must be an object')
        parts = []
        for key, axes in (('translation', 'xyz'), ('rotation', ('pan', 'tilt', 'roll'))):
            value = transform.get(key)
            if not isinstance(value, dict):
                raise OpenTrackIOError('invalid_sample', f'{where}.{key} is missing')
            parts.append([_number(value.get(a, 0.0), f'{where}.{key}.{a}') for a in axes])
        out.append(tuple(parts))
    return out


def check_sample(sample):
    """Check the fields camstab reads or passes on; OpenTrackIOError('invalid_sample')."""
    sample_transforms(sample)
    timing = _object(sample, 'timing', '')
    if timing:
        stamp = _object(timing, 'sampleTimestamp', 'timing.')
        if stamp is not None:
            _integer(stamp.get('seconds'), 'timing.sampleTimestamp.seconds', 0,
                     (1 << 48) - 1)
            _integer(stamp.get('nanoseconds'), 'timing.sampleTimestamp.nanoseconds', 0,
                     (1 << 32) - 1)
        rate = _object(timing, 'sampleRate', 'timing.')
        if rate is not None:
            _integer(rate.get('num'), 'timing.sampleRate.num', 1, (1 << 31) - 1)
            _integer(rate.get('denom'), 'timing.sampleRate.denom', 1, (1 << 32) - 1)
        if 'sequenceNumber' in timing:
            _integer(timing['sequenceNumber'], 'timing.sequenceNumber', 0, (1 << 32) - 1)
    lens = _object(sample, 'lens', '')
    if lens:
        encoders = _object(lens, 'encoders', 'lens.') or {}
        for axis, value in encoders.items():
            if not 0.0 <= _number(value, f'lens.encoders.{axis}') <= 1.0:
                raise OpenTrackIOError('invalid_sample',
                                       f'lens.encoders.{axis} must be in 0..1, got {value}')
        raw = _object(lens, 'rawEncoders', 'lens.') or {}
        for axis, value in raw.items():
            _integer(value, f'lens.rawEncoders.{axis}', 0, (1 << 32) - 1)
    return sample


def _rotation(pan_tilt_roll):
    # Intrinsic Z-X-Y of the stage axes, right-handed.
    return Rotation.from_euler('ZXY', pan_tilt_roll, degrees=True)


def _to_rep103(translation, rotation):
    # The same pose in REP 103 axes: p = M t, R = M R_stage M^T.
    return _STAGE_TO_REP103.apply(translation), (
        _STAGE_TO_REP103 * rotation * _STAGE_TO_REP103.inv())


def _from_rep103(position, rotation):
    return _STAGE_TO_REP103.inv().apply(position), (
        _STAGE_TO_REP103.inv() * rotation * _STAGE_TO_REP103)


def sample_pose(sample):
    """Return the camera's REP 103 pose of a sample: position (3,) m, quaternion x, y, z, w."""
    translation, rotation = np.zeros(3), Rotation.identity()
    for t, angles in sample_transforms(sample):
        translation = translation + rotation.apply(t)
        rotation = rotation * _rotation(angles)
    position, rep_rotation = _to_rep103(translation, rotation)
    return position, rep_rotation.as_quat()


def _parent_pose(transforms):
    translation, rotation = np.zeros(3), Rotation.identity()
    for t, angles in transforms[:-1]:
        translation = translation + rotation.apply(t)
        rotation = rotation * _rotation(angles)
    return translation, rotation


def _transform_fields(translation, rotation):
    with warnings.catch_warnings():  # at tilt +-90 deg pan and roll share one axis: fine
        warnings.simplefilter('ignore', UserWarning)
        pan, tilt, roll = rotation.as_euler('ZXY', degrees=True)
    return ({'x': float(translation[0]), 'y': float(translation[1]),
             'z': float(translation[2])},
            {'pan': float(pan), 'tilt': float(tilt), 'roll': float(roll)})


def with_pose(sample, position, quaternion):
    """
    Return a copy of sample whose camera pose is the given REP 103 pose.

    The last transform is replaced by the one that composes with its parents to the pose;
    the parents, lens, timing and every other field are kept as they are. The copy gets a
    new sampleId, and the input's sampleId joins its relatedSampleIds.
    """
    stage_t, stage_r = _from_rep103(np.asarray(position, float),
                                    Rotation.from_quat(np.asarray(quaternion, float)))
    parent_t, parent_r = _parent_pose(sample_transforms(sample))
    local_r = parent_r.inv() * stage_r
    local_t = parent_r.inv().apply(stage_t - parent_t)
    out = dict(sample)
    last = dict(sample['transforms'][-1])
    last['translation'], last['rotation'] = _transform_fields(local_t, local_r)
    out['transforms'] = list(sample['transforms'][:-1]) + [last]
    if isinstance(sample.get('sampleId'), str):
        related = sample.get('relatedSampleIds')
        out['relatedSampleIds'] = (list(related) if isinstance(related, list) else []) + [
            sample['sampleId']]
    out['sampleId'] = new_id()
    return out


def new_id():
    """Return a new sample or source identifier (a UUID URN)."""
    return _UUID_URN + str(uuid.uuid4())


def make_sample(position, quaternion, source_id, source_number=1, sequence=None,
                rate=None, stamp_s=None, raw_encoders=None, encoders=None):
    """
    Return a new sample carrying a REP 103 pose as one 'Camera' transform.

    rate: the sample rate as a Fraction; stamp_s: the sampleTimestamp (PTP seconds), when
    the source has one (timing mode 'internal'), else the transport's timing is implied
    ('external'); raw_encoders / encoders: {'zoom': .., 'focus': .., 'iris': ..}.
    """
    translation, rotation = _from_rep103(np.asarray(position, float),
                                         Rotation.from_quat(np.asarray(quaternion, float)))
    t, r = _transform_fields(translation, rotation)
    timing = {'mode': 'external' if stamp_s is None else 'internal'}
    if rate is not None:
        timing['sampleRate'] = {'num': rate.numerator, 'denom': rate.denominator}
    if stamp_s is not None:
        timing['sampleTimestamp'] = timestamp_fields(stamp_s)
    if sequence is not None:
        timing['sequenceNumber'] = sequence % (1 << 32)
    sample = {'protocol': dict(PROTOCOL), 'sampleId': new_id(), 'sourceId': source_id,
              'sourceNumber': source_number, 'timing': timing,
              'transforms': [{'translation': t, 'rotation': r, 'id': 'Camera'}]}
    lens = {}
    if raw_encoders:
        lens['rawEncoders'] = {k: int(v) for k, v in raw_encoders.items()}
    if encoders:
        lens['encoders'] = {k: float(v) for k, v in encoders.items()}
    if lens:
        sample['lens'] = lens
    return sample


def timestamp_fields(seconds):
    """Return a sampleTimestamp object for a time in seconds (nanosecond resolution)."""
    ns = round(seconds * 1e9)
    if ns < 0:
        raise ValueError(f'a sampleTimestamp cannot be negative: {seconds}')
    return {'seconds': ns // 1_000_000_000, 'nanoseconds': ns % 1_000_000_000}


def frame_timing(timing, stamp_s, rate, sequence):
    """
    Return the timing of a sample resampled to a video frame instant.

    sampleRate becomes the frame rate (a Fraction), sequenceNumber the frame's;
    sampleTimestamp the frame instant when stamp_s (PTP seconds) is given, else it is
    removed (mode 'external'). The input's timecode and recordedTimestamp labelled the
    input's instant, so they are removed; synchronization is kept.
    """
    out = {k: v for k, v in (timing or {}).items()
           if k not in ('timecode', 'recordedTimestamp', 'sampleTimestamp')}
    out['sampleRate'] = {'num': rate.numerator, 'denom': rate.denominator}
    out['sequenceNumber'] = sequence % (1 << 32)
    if stamp_s is None:
        out['mode'] = 'external'
    else:
        out['mode'] = 'internal'
        out['sampleTimestamp'] = timestamp_fields(stamp_s)
    return out


def sample_time(sample):
    """Return the sample's sampleTimestamp in seconds, or None if it has none."""
    stamp = (sample.get('timing') or {}).get('sampleTimestamp')
    if not isinstance(stamp, dict):
        return None
    return stamp['seconds'] + stamp['nanoseconds'] * 1e-9


def decode_sample(payload, encoding):
    """Decode and check one reassembled payload; OpenTrackIOError with the drop reason."""
    return check_sample(decode_payload(payload, encoding))


def read_samples(path):
    """
    Read a recording of samples: JSON Lines (one sample per line) or a CBOR sequence.

    The first byte tells which ('{' starts JSON). Every sample is checked; an
    OpenTrackIOError names the file, the sample (line) and the reason.
    """
    try:
        data = open(path, 'rb').read()
    except OSError as exc:
        raise OpenTrackIOError('unreadable', f'{path}: cannot read: {exc.strerror}') from None
    text = data.lstrip()
    samples = []
    if text.startswith(b'{'):
        for line_no, line in enumerate(data.splitlines(), 1):
            if line.strip():
                samples.append((f'{path}:{line_no}', line, 'json'))
    else:
        decoder = cbor2.CBORDecoder(io.BytesIO(data))
        while decoder.fp.tell() < len(data):
            start = decoder.fp.tell()
            try:
                item = decoder.decode()
            except (cbor2.CBORDecodeError, ValueError) as exc:
                raise OpenTrackIOError('garbage_payload', f'{path}: byte {start}: not CBOR '
                                       f'({exc})') from None
            samples.append((f'{path}: sample {len(samples) + 1}', item, None))
    out = []
    for where, item, encoding in samples:
        try:
            sample = decode_payload(item, encoding) if encoding else item
            if not isinstance(sample, dict):
                raise OpenTrackIOError('garbage_payload', 'a sample is an object')
            out.append(check_sample(sample))
        except OpenTrackIOError as exc:
            raise OpenTrackIOError(exc.reason, f'{where}: {exc}') from None
    if not out:
        raise OpenTrackIOError('no_pose', f'{path}: no samples in the file')
    return out


def sample_times(samples):
    """
    Return the stamps (s) of recorded samples: their sampleTimestamps, else index / rate.

    OpenTrackIOError when neither times them (no sampleTimestamp on every sample and no
    sampleRate on the first).
    """
    stamps = [sample_time(s) for s in samples]
    if all(t is not None for t in stamps):
        return stamps
    rate = (samples[0].get('timing') or {}).get('sampleRate')
    if rate:
        return [k * rate['denom'] / rate['num'] for k in range(len(samples))]
    raise OpenTrackIOError('no_timing', 'the samples have neither a sampleTimestamp each '
                           'nor a sampleRate: they cannot be timed')

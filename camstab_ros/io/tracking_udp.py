"""
Camera tracking over UDP, free of ROS: FreeD D1 or OpenTrackIO in, either one out.

- `Measurement`: one decoded tracker sample: REP 103 pose, the stream's own stamp (if
  any) and what it carries (the FreeD packet or the OpenTrackIO sample) to pass on;
- `TimeBase`: stamps of arriving frames (the stream's own, arrival time, or a jitter-free
  frame clock);
- `TrackingInput`: a receiver thread calling a handler per valid sample, drops counted by
  reason;
- `TrackingEncoder` / `TrackingOutput`: pose + what the input carried -> the datagram(s)
  of either protocol, and sent;
- INPUT_SPECS / OUTPUT_SPECS: their parameters, shared by the nodes and the bridge.

Crossing protocols: FreeD -> OpenTrackIO writes the camera id as `sourceNumber`, zoom and
focus as `lens.rawEncoders` and the spare bytes nowhere; OpenTrackIO -> FreeD takes the
camera id from `sourceNumber` (0 above 255) and zoom and focus from `lens.rawEncoders`
(0 where absent or beyond FreeD's 24 bits).
"""
from collections import Counter
from dataclasses import dataclass
import threading

from camstab_ros.core.params import ParamSpec
from camstab_ros.io import freed, opentrackio
from camstab_ros.io.udp import parse_allow_list, parse_host_port, UdpReceiver, UdpSender


PROTOCOLS = ('freed', 'opentrackio')
DEFAULT_PORTS = {'freed': 40000, 'opentrackio': opentrackio.DEFAULT_PORT}
DEFAULT_DESTINATIONS = {'freed': '127.0.0.1:40001',
                        'opentrackio': f'{opentrackio.multicast_group(1)}:55555'}
UDP_DROP_REASONS = ('not_allowed_sender', 'queue_overflow', 'kernel_overflow')
INPUT_DROP_REASONS = {
    'freed': ('wrong_length', 'wrong_type', 'bad_checksum') + UDP_DROP_REASONS,
    'opentrackio': (opentrackio.PACKET_DROP_REASONS + opentrackio.SAMPLE_DROP_REASONS
                    + UDP_DROP_REASONS),
}
OUTPUT_DROP_REASONS = ('not_encodable', 'send_failed', 'lens_out_of_range')
TIME_BASES = ('source', 'receipt', 'frame_rate')
# time_base frame_rate: re-anchor the frame clock when it is this far from arrival time.
RESYNC_S = 0.5
_UINT24_MAX = (1 << 24) - 1


INPUT_SPECS = {
    'bind_address': ParamSpec('0.0.0.0', 'local address to listen on; a multicast group '
                              '(OpenTrackIO 239.135.1.<source number>) is joined'),
    'port': ParamSpec(-1, 'UDP port to listen on; -1: the protocol default (FreeD 40000, '
                      'OpenTrackIO 55555)', '', -1, 65535),
    'allowed_senders': ParamSpec(
        [''], 'sender addresses or networks (CIDR) accepted; empty: any sender',
        check=parse_allow_list),
    'queue_size': ParamSpec(64, 'datagrams handled per wake-up; older ones beyond are '
                            'dropped and counted', 'datagrams', 1, 100000),
    'time_base': ParamSpec('source', "stamps: source (the stream's own: OpenTrackIO "
                           'sampleTimestamp; receipt where none), receipt (arrival time) '
                           'or frame_rate (frame clock at frame_rate_hz, free of network '
                           'jitter)', choices=TIME_BASES),
    'frame_rate_hz': ParamSpec(60.0, 'tracker frame rate for time_base frame_rate', 'Hz',
                               1.0, 1000.0),
}
OUTPUT_SPECS = {
    'destination': ParamSpec('', 'HOST:PORT the datagrams are sent to (a multicast group '
                             'works); empty: the protocol default (FreeD 127.0.0.1:40001, '
                             'OpenTrackIO 239.135.1.1:55555)',
                             check=lambda text: text and parse_host_port(text)),
    'camera_id': ParamSpec(-1, 'FreeD camera id / OpenTrackIO sourceNumber sent; -1: '
                           'that of the input (0 / 1 if none)', '', -1, 255),
    'opentrackio_encoding': ParamSpec('json', 'OpenTrackIO payload encoding',
                                      choices=tuple(opentrackio.ENCODINGS)),
}


@dataclass
class Measurement:
    """One tracker sample: REP 103 pose, its own stamp (s) if any, what it carries."""

    position: object
    quaternion: object
    source_time: object
    carried: object  # freed.FreeDPacket or an OpenTrackIO sample (dict)


class TimeBase:
    """
    Stamps (seconds) of arriving frames: the stream's own, arrival time, or a frame clock.

    With a frame rate, frame k after the anchor is stamped anchor + k / rate: network
    jitter does not reach the stamps. When the clock drifts more than RESYNC_S from the
    arrival time (a gap, a wrong rate) it re-anchors on the arrival time, never earlier
    than one frame after the last stamp, so stamps always increase.
    """

    def __init__(self, frame_rate_hz=0.0, use_source=False):
        """frame_rate_hz 0: stamp each frame with its arrival time (or its own stamp)."""
        self.frame_rate_hz = frame_rate_hz
        self.use_source = use_source
        self._anchor = None
        self._frames = 0
        self.resyncs = 0

    @classmethod
    def from_values(cls, values):
        """Return the time base that INPUT_SPECS values (time_base, frame_rate_hz) call for."""
        return cls(values['frame_rate_hz'] if values['time_base'] == 'frame_rate' else 0.0,
                   values['time_base'] == 'source')

    def stamp(self, arrival_s, source_s=None):
        """Return the stamp of a frame that arrived at arrival_s (source_s: its own)."""
        if self.use_source and source_s is not None:
            return source_s
        if self.frame_rate_hz <= 0.0:
            return arrival_s
        if self._anchor is None:
            self._anchor, self._frames = arrival_s, 0
            return arrival_s
        self._frames += 1
        t = self._anchor + self._frames / self.frame_rate_hz
        if abs(t - arrival_s) > RESYNC_S:
            self.resyncs += 1
            self._anchor, self._frames = max(arrival_s, t), 0
            t = self._anchor
        return t


def resolve_port(protocol, port):
    """Return port, or the protocol's default port for -1."""
    if port != -1 and not 0 <= port <= 65535:
        raise ValueError(f'port must be -1 (the protocol default) or 0..65535, got {port}')
    return DEFAULT_PORTS[protocol] if port == -1 else port


class _FreedDecoder:
    dropped = {}

    def decode(self, data):
        if len(data) != freed.PACKET_SIZE:
            return None, 'wrong_length'
        if data[0] != freed.MESSAGE_TYPE:
            return None, 'wrong_type'
        try:
            packet = freed.decode(data)
        except freed.FreeDError:
            return None, 'bad_checksum'
        position, quaternion = freed.packet_to_pose(packet)
        return Measurement(position, quaternion, None, packet), None


class _OpenTrackIODecoder:
    def __init__(self):
        self.reassembler = opentrackio.Reassembler()
        self.dropped = self.reassembler.dropped

    def decode(self, data):
        try:
            whole = self.reassembler.add(opentrackio.parse_packet(data))
            if whole is None:
                return None, None  # a segment of a sample still incomplete
            sample = opentrackio.decode_sample(whole[1], whole[0])
        except opentrackio.OpenTrackIOError as exc:
            return None, exc.reason
        position, quaternion = opentrackio.sample_pose(sample)
        return Measurement(position, quaternion, opentrackio.sample_time(sample),
                           sample), None


class TrackingInput:
    """
    Tracking input of one protocol: a UDP receiver thread, decoding and drop counts.

    `handler(measurement, sender, arrival_ns)` is called in the receiver thread for each
    valid sample, in arrival order; `on_drop(reason, data, sender)` for each datagram or
    sample dropped as malformed.
    """

    def __init__(self, protocol, host, port, handler, allow=(), queue_size=64,
                 on_drop=None):
        """Bind host:port (UdpError with the reason if impossible); start() to receive."""
        if protocol not in PROTOCOLS:
            raise ValueError(f'protocol must be one of {", ".join(PROTOCOLS)}, got '
                             f'{protocol!r}')
        self.protocol = protocol
        self._decoder = _FreedDecoder() if protocol == 'freed' else _OpenTrackIODecoder()
        self.udp = UdpReceiver(host, resolve_port(protocol, port), allow, queue_size)
        self.handler = handler
        self.on_drop = on_drop
        self.malformed = Counter()
        self.valid = 0
        self._running = False
        self._thread = None

    @classmethod
    def from_values(cls, protocol, values, handler):
        """Return a TrackingInput configured by INPUT_SPECS values."""
        return cls(protocol, values['bind_address'], values['port'], handler,
                   [a for a in values['allowed_senders'] if a.strip()], values['queue_size'])

    @property
    def dropped(self):
        """{reason: count} of every dropped datagram or sample, every reason listed."""
        counts = dict(self.malformed)
        counts.update(self._decoder.dropped)
        counts['not_allowed_sender'] = self.udp.dropped_sender
        counts['queue_overflow'] = self.udp.dropped_overflow
        counts['kernel_overflow'] = self.udp.dropped_kernel or 0
        return {reason: counts.get(reason, 0) for reason in INPUT_DROP_REASONS[self.protocol]}

    def start(self):
        """Start the receiver thread."""
        self._running = True
        self._thread = threading.Thread(target=self._loop, name=f'{self.protocol}_input',
                                        daemon=True)
        self._thread.start()

    def stop(self):
        """Stop the receiver thread and close the socket."""
        self._running = False
        if self._thread is not None:
            self._thread.join()
        self.udp.close()

    def _loop(self):
        while self._running:
            for data, sender, arrival_ns in self.udp.receive_batch():
                measurement, reason = self._decoder.decode(data)
                if reason is not None:
                    self.malformed[reason] += 1
                    if self.on_drop is not None:
                        self.on_drop(reason, data, sender)
                elif measurement is not None:
                    self.valid += 1
                    self.handler(measurement, sender, arrival_ns)


class TrackingEncoder:
    """Pose + what the input carried -> the datagram(s) of one protocol."""

    def __init__(self, protocol, camera_id=-1, encoding='json'):
        """camera_id >= 0 overrides the camera id / source number of every output."""
        if protocol not in PROTOCOLS:
            raise ValueError(f'protocol must be one of {", ".join(PROTOCOLS)}, got '
                             f'{protocol!r}')
        if encoding not in opentrackio.ENCODINGS:
            raise ValueError(f'OpenTrackIO encoding must be json or cbor, got {encoding!r}')
        self.protocol = protocol
        self.camera_id = camera_id
        self.encoding = encoding
        self.source_id = opentrackio.new_id()  # this output's, for samples made from FreeD
        self.sequence = 0

    def encode(self, position, quaternion, carried=None, frame=None):
        """
        Return the datagrams of one pose; FreeDError or ValueError if it cannot be encoded.

        carried: the input's FreeDPacket or OpenTrackIO sample (lens, ids and timing are
        passed on), None for none. frame: (stamp_s, rate Fraction) of a video frame
        instant when the output is on the frame clock (OpenTrackIO timing rewritten;
        stamp_s None when the stamps are not the source's PTP time).
        """
        if self.protocol == 'freed':
            return [freed.encode(self._freed_packet(position, quaternion, carried))]
        sample = self._sample(position, quaternion, carried, frame)
        data = opentrackio.packets(opentrackio.encode_payload(sample, self.encoding),
                                   self.encoding, self.sequence)
        self.sequence += 1
        return data

    def encode_sample(self, sample):
        """Return the datagrams of an OpenTrackIO sample sent as it is (a recording)."""
        data = opentrackio.packets(opentrackio.encode_payload(sample, self.encoding),
                                   self.encoding, self.sequence)
        self.sequence += 1
        return data

    def _freed_packet(self, position, quaternion, carried):
        camera_id, zoom, focus, spare = 0, 0, 0, 0
        if isinstance(carried, freed.FreeDPacket):
            camera_id, zoom, focus, spare = (carried.camera_id, carried.zoom, carried.focus,
                                             carried.spare)
        elif isinstance(carried, dict):
            number = carried.get('sourceNumber', 0)
            camera_id = number if isinstance(number, int) and 0 <= number <= 255 else 0
            raw = (carried.get('lens') or {}).get('rawEncoders') or {}
            zoom, focus = (v if isinstance(v, int) and 0 <= v <= _UINT24_MAX else 0
                           for v in (raw.get('zoom', 0), raw.get('focus', 0)))
        if self.camera_id >= 0:
            camera_id = self.camera_id
        return freed.pose_to_packet(position, quaternion, camera_id=camera_id, zoom=zoom,
                                    focus=focus, spare=spare)

    def _sample(self, position, quaternion, carried, frame):
        if isinstance(carried, dict):
            sample = opentrackio.with_pose(carried, position, quaternion)
        else:
            packet = carried if isinstance(carried, freed.FreeDPacket) else None
            sample = opentrackio.make_sample(
                position, quaternion, self.source_id,
                source_number=packet.camera_id if packet else 1,
                sequence=self.sequence,
                raw_encoders={'zoom': packet.zoom, 'focus': packet.focus} if packet else None)
        if self.camera_id >= 0:
            sample['sourceNumber'] = self.camera_id
        if frame is not None:
            sample['timing'] = opentrackio.frame_timing(sample.get('timing'), frame[0],
                                                        frame[1], self.sequence)
        return sample


class TrackingOutput:
    """Tracking output of one protocol: pose + what the input carried -> datagram(s)."""

    def __init__(self, protocol, host, port, camera_id=-1, encoding='json', on_drop=None):
        """Send to host:port; camera_id >= 0 overrides the camera id / source number."""
        self.encoder = TrackingEncoder(protocol, camera_id, encoding)
        self.udp = UdpSender(host, port)
        self.on_drop = on_drop
        self.dropped = Counter(dict.fromkeys(OUTPUT_DROP_REASONS, 0))

    @property
    def camera_id(self):
        """Return the camera id / source number sent (-1: that of the input)."""
        return self.encoder.camera_id

    @property
    def source_id(self):
        """Return this output's OpenTrackIO sourceId, for samples made from FreeD."""
        return self.encoder.source_id

    @classmethod
    def from_values(cls, protocol, values):
        """Return a TrackingOutput configured by OUTPUT_SPECS values."""
        host, port = parse_host_port(values['destination'] or DEFAULT_DESTINATIONS[protocol])
        return cls(protocol, host, port, values['camera_id'],
                   values['opentrackio_encoding'])

    def send(self, position, quaternion, carried=None, frame=None):
        """Encode (see TrackingEncoder.encode) and send one pose; False (counted) if dropped."""
        try:
            data = self.encoder.encode(position, quaternion, carried, frame)
        except (freed.FreeDError, ValueError) as exc:
            return self.drop('not_encodable', str(exc))
        for datagram in data:
            if not self.udp.send(datagram):
                return self.drop('send_failed', str(self.udp.last_error))
        return True

    def drop(self, reason, detail):
        """Count (and report to on_drop) one dropped output; returns False."""
        self.dropped[reason] += 1
        if self.on_drop is not None:
            self.on_drop(reason, detail)
        return False

    def close(self):
        """Close the socket."""
        self.udp.close()

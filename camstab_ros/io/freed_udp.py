"""
FreeD D1 over UDP, free of ROS: datagram decoding, stamps, input thread, output.

- `decode_datagram()`: a datagram -> a FreeDPacket, or the reason it is dropped;
- `TimeBase`: stamps of arriving frames (arrival time, or a jitter-free frame clock);
- `FreedInput`: a receiver thread calling a handler per valid packet, drops counted;
- `FreedOutput`: pose + lens values -> one D1 datagram, drops counted;
- INPUT_SPECS / OUTPUT_SPECS: their parameters, shared by the FreeD nodes and the bridge.
"""
from collections import Counter
import threading

from camstab_ros.core.params import ParamSpec
from camstab_ros.io import freed
from camstab_ros.io.udp import parse_allow_list, parse_host_port, UdpReceiver, UdpSender


DEFAULT_PORT = 40000  # Unreal LiveLink FreeD's default
INPUT_DROP_REASONS = ('wrong_length', 'wrong_type', 'bad_checksum', 'not_allowed_sender',
                      'queue_overflow', 'kernel_overflow')
OUTPUT_DROP_REASONS = ('not_encodable', 'send_failed', 'lens_out_of_range')
TIME_BASES = ('receipt', 'frame_rate')
# time_base frame_rate: re-anchor the frame clock when it is this far from arrival time.
RESYNC_S = 0.5

INPUT_SPECS = {
    'bind_address': ParamSpec('0.0.0.0', 'local address to listen on for FreeD'),
    'port': ParamSpec(DEFAULT_PORT, 'UDP port to listen on for FreeD', '', 0, 65535),
    'allowed_senders': ParamSpec(
        [''], 'sender addresses or networks (CIDR) accepted; empty: any sender',
        check=parse_allow_list),
    'queue_size': ParamSpec(64, 'datagrams handled per wake-up; older ones beyond are '
                            'dropped and counted', 'datagrams', 1, 100000),
    'time_base': ParamSpec('receipt', 'stamps: receipt (arrival time) or frame_rate (frame '
                           'clock at frame_rate_hz, free of network jitter)',
                           choices=TIME_BASES),
    'frame_rate_hz': ParamSpec(60.0, 'tracker frame rate for time_base frame_rate', 'Hz',
                               1.0, 1000.0),
}
OUTPUT_SPECS = {
    'destination': ParamSpec('127.0.0.1:40001', 'HOST:PORT the FreeD datagrams are sent to',
                             check=parse_host_port),
    'camera_id': ParamSpec(-1, 'camera id byte sent; -1: that of the input (0 if none)', '',
                           -1, 255),
}


def decode_datagram(data):
    """(FreeDPacket, None) for a valid D1 message, else (None, drop reason)."""
    if len(data) != freed.PACKET_SIZE:
        return None, 'wrong_length'
    if data[0] != freed.MESSAGE_TYPE:
        return None, 'wrong_type'
    try:
        return freed.decode(data), None
    except freed.FreeDError:
        return None, 'bad_checksum'


class TimeBase:
    """
    Stamps (seconds) of arriving frames: their arrival time, or a frame clock.

    With a frame rate, frame k after the anchor is stamped anchor + k / rate: network
    jitter does not reach the stamps. When the clock drifts more than RESYNC_S from the
    arrival time (a gap, a wrong rate) it re-anchors on the arrival time, never earlier
    than one frame after the last stamp, so stamps always increase.
    """

    def __init__(self, frame_rate_hz=0.0):
        """frame_rate_hz 0: stamp each frame with its arrival time."""
        self.frame_rate_hz = frame_rate_hz
        self._anchor = None
        self._frames = 0
        self.resyncs = 0

    @classmethod
    def from_values(cls, values):
        """Return the time base that INPUT_SPECS values (time_base, frame_rate_hz) call for."""
        return cls(values['frame_rate_hz'] if values['time_base'] == 'frame_rate' else 0.0)

    def stamp(self, arrival_s):
        """Return the stamp of a frame that arrived at arrival_s."""
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


class FreedInput:
    """
    FreeD input: a UDP receiver thread, decoding and drop counts.

    `handler(packet, sender, arrival_ns)` is called in the receiver thread for each
    valid packet, in arrival order; `on_drop(reason, data, sender)` for each malformed
    datagram.
    """

    def __init__(self, host, port, handler, allow=(), queue_size=64, on_drop=None):
        """Bind host:port (UdpError with the reason if impossible); start() to receive."""
        self.udp = UdpReceiver(host, port, allow, queue_size)
        self.handler = handler
        self.on_drop = on_drop
        self.malformed = Counter()
        self.valid = 0
        self._running = False
        self._thread = None

    @classmethod
    def from_values(cls, values, handler):
        """Return a FreedInput configured by INPUT_SPECS values."""
        return cls(values['bind_address'], values['port'], handler,
                   [a for a in values['allowed_senders'] if a.strip()], values['queue_size'])

    @property
    def dropped(self):
        """{reason: count} of every dropped datagram, every reason listed."""
        counts = dict(self.malformed)
        counts['not_allowed_sender'] = self.udp.dropped_sender
        counts['queue_overflow'] = self.udp.dropped_overflow
        counts['kernel_overflow'] = self.udp.dropped_kernel or 0
        return {reason: counts.get(reason, 0) for reason in INPUT_DROP_REASONS}

    def start(self):
        """Start the receiver thread."""
        self._running = True
        self._thread = threading.Thread(target=self._loop, name='freed_input', daemon=True)
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
                packet, reason = decode_datagram(data)
                if reason is not None:
                    self.malformed[reason] += 1
                    if self.on_drop is not None:
                        self.on_drop(reason, data, sender)
                    continue
                self.valid += 1
                self.handler(packet, sender, arrival_ns)


class FreedOutput:
    """FreeD output: pose + lens values -> one D1 datagram, drops counted."""

    def __init__(self, host, port, camera_id=-1, on_drop=None):
        """Send to host:port; camera_id >= 0 overrides the camera id of every datagram."""
        self.udp = UdpSender(host, port)
        self.camera_id = camera_id
        self.on_drop = on_drop
        self.dropped = Counter(dict.fromkeys(OUTPUT_DROP_REASONS, 0))

    @classmethod
    def from_values(cls, values):
        """Return a FreedOutput configured by OUTPUT_SPECS values."""
        host, port = parse_host_port(values['destination'])
        return cls(host, port, values['camera_id'])

    def send(self, position, quaternion, camera_id=0, zoom=0, focus=0, spare=0):
        """Encode and send one pose; False (counted) if it was dropped."""
        if self.camera_id >= 0:
            camera_id = self.camera_id
        try:
            data = freed.encode(freed.pose_to_packet(
                position, quaternion, camera_id=camera_id, zoom=zoom, focus=focus,
                spare=spare))
        except freed.FreeDError as exc:
            return self.drop('not_encodable', str(exc))
        if not self.udp.send(data):
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

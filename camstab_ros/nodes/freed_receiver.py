"""The `freed_receiver` node: FreeD D1 over UDP -> PoseStamped and lens values.

Topics (relative names):
- pub `pose_out` geometry_msgs/PoseStamped, reliable, depth 10: one per valid datagram,
  REP 103 pose by the FreeD mapping of Unreal's LiveLink FreeD source, in `frame_id`;
- pub `lens_out` geometry_msgs/Vector3Stamped, reliable, depth 10, same stamp as the pose:
  x = zoom, y = focus, z = spare (raw FreeD encoder counts); `freed_sender` passes them on;
- pub `/diagnostics` diagnostic_msgs/DiagnosticArray at 1 Hz: received, published and
  every drop counted by reason.

Datagrams are read by a thread of their own (see `UdpReceiver` for the bounded batch);
malformed ones (wrong length, wrong type byte, bad checksum) are dropped, counted and
logged at most once per second.
"""
import sys
import threading
import time
from collections import Counter

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped, Vector3Stamped
from rcl_interfaces.msg import IntegerRange, ParameterDescriptor
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.time import Time

from camstab_ros.io import freed
from camstab_ros.io.udp import UdpError, UdpReceiver
from camstab_ros.nodes import conversions

NODE_NAME = 'freed_receiver'
DEFAULT_PORT = 40000  # Unreal LiveLink FreeD's default
DROP_REASONS = ('wrong_length', 'wrong_type', 'bad_checksum', 'not_allowed_sender',
                'queue_overflow')
TIME_BASES = ('receipt', 'frame_rate')
DIAGNOSTICS_PERIOD_S = 1.0
DROP_LOG_PERIOD_S = 1.0
# time_base frame_rate: re-anchor the frame clock when it is this far from arrival time.
RESYNC_S = 0.5
EXIT_CONFIG = 2


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
    """Stamps (seconds) of arriving frames: their arrival time, or a frame clock.

    With a frame rate, frame k after the anchor is stamped anchor + k / rate: network
    jitter does not reach the stamps. When the clock drifts more than RESYNC_S from the
    arrival time (a gap, a wrong rate) it re-anchors on the arrival time, never earlier
    than one frame after the last stamp, so stamps always increase.
    """

    def __init__(self, frame_rate_hz=0.0):
        self.frame_rate_hz = frame_rate_hz
        self._anchor = None
        self._frames = 0
        self.resyncs = 0

    def stamp(self, arrival_s):
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
    """ROS-free FreeD input: a UDP receiver thread, decoding and drop counts.

    `handler(packet, sender, arrival_ns)` is called in the receiver thread for each
    valid packet, in arrival order.
    """

    def __init__(self, host, port, handler, allow=(), queue_size=64, on_drop=None):
        self.udp = UdpReceiver(host, port, allow, queue_size)
        self.handler = handler
        self.on_drop = on_drop
        self.malformed = Counter()
        self.valid = 0
        self._running = False
        self._thread = None

    @property
    def dropped(self):
        counts = dict(self.malformed)
        counts['not_allowed_sender'] = self.udp.dropped_sender
        counts['queue_overflow'] = self.udp.dropped_overflow
        return {reason: counts.get(reason, 0) for reason in DROP_REASONS}

    def start(self):
        self._running = True
        self._thread = threading.Thread(target=self._loop, name='freed_input', daemon=True)
        self._thread.start()

    def stop(self):
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


def input_parameters():
    """{name: (default, description)} of the UDP input parameters (receiver and bridge)."""
    return {
        'bind_address': ('0.0.0.0', 'local address to listen on for FreeD'),
        'port': (DEFAULT_PORT, 'UDP port to listen on for FreeD'),
        'allowed_senders': (
            [''], 'sender addresses or networks (CIDR) accepted; empty: any sender'),
        'queue_size': (64, 'datagrams handled per wake-up; older ones beyond are dropped '
                       'and counted [datagrams]'),
        'frame_id': ('freed_studio', 'frame id of the poses (FreeD studio axes as REP 103)'),
        'time_base': ('receipt', 'stamps: receipt (arrival time) or frame_rate (frame '
                      'clock at frame_rate_hz, free of network jitter)'),
        'frame_rate_hz': (60.0, 'tracker frame rate for time_base frame_rate [Hz]'),
    }


def declare_input_parameters(node):
    """Declare the input parameters on node; return their values (ValueError if invalid)."""
    for name, (default, description) in input_parameters().items():
        descriptor = ParameterDescriptor(
            name=name, description=f'{description}; default {default!r}', read_only=True)
        if name == 'port':
            descriptor.integer_range = [IntegerRange(from_value=0, to_value=65535, step=1)]
        if name == 'queue_size':
            descriptor.integer_range = [IntegerRange(from_value=1, to_value=100000, step=1)]
        node.declare_parameter(name, default, descriptor)
    values = {name: node.get_parameter(name).value for name in input_parameters()}
    if values['time_base'] not in TIME_BASES:
        raise ValueError(f'time_base must be one of {", ".join(TIME_BASES)}, '
                         f'got {values["time_base"]!r}')
    if values['time_base'] == 'frame_rate' and not values['frame_rate_hz'] > 0.0:
        raise ValueError('time_base frame_rate needs frame_rate_hz > 0')
    values['allowed_senders'] = [a for a in values['allowed_senders'] if a.strip()]
    return values


def make_time_base(values):
    return TimeBase(values['frame_rate_hz'] if values['time_base'] == 'frame_rate' else 0.0)


def diagnostic_array(node, name, level, message, values):
    status = DiagnosticStatus(
        level=level, name=f'{node.get_name()}: {name}', message=message,
        hardware_id='freed', values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
    array = DiagnosticArray(status=[status])
    array.header.stamp = node.get_clock().now().to_msg()
    return array


class DropLog:
    """Logs dropped datagrams at most once per DROP_LOG_PERIOD_S (all are counted)."""

    def __init__(self, logger, counts):
        self.logger = logger
        self.counts = counts
        self._last = -float('inf')

    def __call__(self, reason, data, sender):
        now = time.monotonic()
        if now - self._last < DROP_LOG_PERIOD_S:
            return
        self._last = now
        counts = ', '.join(f'{r} {n}' for r, n in self.counts().items() if n)
        self.logger.warning(f'dropped a {len(data)}-byte datagram from {sender[0]}:{sender[1]} '
                            f'({reason}); dropped so far: {counts}')


class FreedReceiverNode(Node):
    """FreeD over UDP -> pose_out and lens_out; see the module docstring."""

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        self._input = None
        values = declare_input_parameters(self)
        self._frame_id = values['frame_id']
        self._time_base = make_time_base(values)
        self.published = 0
        self._pub = self.create_publisher(PoseStamped, 'pose_out', 10)
        self._lens_pub = self.create_publisher(Vector3Stamped, 'lens_out', 10)
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._input = FreedInput(
            values['bind_address'], values['port'], self._on_packet,
            values['allowed_senders'], values['queue_size'])
        self._input.on_drop = DropLog(self.get_logger(), lambda: self._input.dropped)
        self._diag_timer = self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics)
        self._input.start()
        host, port = self._input.udp.address
        self.get_logger().info(f'listening for FreeD on udp {host}:{port}')

    @property
    def address(self):
        return self._input.udp.address

    def _on_packet(self, packet, sender, arrival_ns):
        position, quaternion = freed.packet_to_pose(packet)
        # Arrival on the node clock: now, less the time since the datagram was read.
        now = self.get_clock().now().nanoseconds
        arrival = (now - (time.monotonic_ns() - arrival_ns)) * 1e-9
        stamp = Time(nanoseconds=round(self._time_base.stamp(arrival) * 1e9)).to_msg()
        lens = Vector3Stamped()
        lens.header.stamp, lens.header.frame_id = stamp, self._frame_id
        lens.vector.x, lens.vector.y = float(packet.zoom), float(packet.focus)
        lens.vector.z = float(packet.spare)
        self._lens_pub.publish(lens)  # first, so a sender has it when the pose arrives
        self._pub.publish(conversions.make_pose_stamped(stamp, self._frame_id, position,
                                                        quaternion))
        self.published += 1

    def _publish_diagnostics(self):
        dropped = self._input.dropped
        if self._input.valid == 0:
            level, message = DiagnosticStatus.WARN, 'no valid FreeD received yet'
        else:
            level, message = DiagnosticStatus.OK, 'receiving FreeD'
        host, port = self._input.udp.address
        self._diag_pub.publish(diagnostic_array(self, 'FreeD input', level, message, {
            'address': f'{host}:{port}',
            'received': self._input.udp.received,
            'published': self.published,
            'dropped': sum(dropped.values()),
            **{f'dropped.{reason}': n for reason, n in dropped.items()},
            'time_base_resyncs': self._time_base.resyncs,
        }))

    def destroy_node(self):
        if self._input is not None:
            self._input.stop()
        return super().destroy_node()


def run_node(node_class, name, args=None):
    """init, spin, shutdown; exit code 2 on a configuration or port error."""
    rclpy.init(args=args)
    node = None
    try:
        node = node_class()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (UdpError, ValueError, ParameterException) as exc:
        rclpy.logging.get_logger(name).fatal(f'cannot start: {exc}')
        return EXIT_CONFIG
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


def main(args=None):
    return run_node(FreedReceiverNode, NODE_NAME, args)


if __name__ == '__main__':
    sys.exit(main())

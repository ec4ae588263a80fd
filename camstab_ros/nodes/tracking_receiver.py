"""
The `freed_receiver` and `opentrackio_receiver` nodes: tracking over UDP -> PoseStamped.

Topics (relative names):
- pub `pose_out` geometry_msgs/PoseStamped, reliable, depth 10: one per valid sample,
  the REP 103 pose by the protocol's documented mapping (README, stage protocols), in
  `frame_id`, stamped by `time_base`: by default on arrival, on the node's clock like
  the rest of ROS (`source` takes an OpenTrackIO sampleTimestamp, which is PTP time:
  TAI, 37 s ahead of UTC; the stabiliser adopts such an offset as a clock step);
- pub `lens_out` geometry_msgs/Vector3Stamped, reliable, depth 10, same stamp, published
  first: FreeD x = zoom, y = focus, z = spare (raw encoder counts); OpenTrackIO x = zoom,
  y = focus, z = iris (`lens.encoders`, 0..1; NaN where the sample has none; only
  samples with encoders); the matching sender passes them on;
- pub `/diagnostics` diagnostic_msgs/DiagnosticArray at 1 Hz: received, published and
  every drop counted by reason.

Datagrams are read by a thread of their own (see `io.tracking_udp.TrackingInput`);
malformed ones are dropped, counted by reason and logged at most once per second.
"""
import dataclasses
import math
import sys
import time

from camstab_ros.core.params import ParamSpec
from camstab_ros.core.validation import drop_figures
from camstab_ros.io.tracking_udp import INPUT_SPECS, TimeBase, TrackingInput
from camstab_ros.nodes import conversions
from camstab_ros.nodes.scaffolding import (declare_parameters, diagnostic_array,
                                           DIAGNOSTICS_PERIOD_S, DropLog, run_node)
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseStamped, Vector3Stamped
from rclpy.node import Node
from rclpy.time import Time


class FreedReceiverNode(Node):
    """FreeD over UDP -> pose_out and lens_out; see the module docstring."""

    NODE_NAME = 'freed_receiver'
    PROTOCOL = 'freed'
    LABEL = 'FreeD'
    FRAME_ID = 'freed_studio'

    @classmethod
    def parameter_specs(cls):
        """Every parameter of the node (all read-only): {name: ParamSpec}."""
        # Stamps on the node clock by default: ROS (tf, RViz, bags) lives on it.
        time_base = dataclasses.replace(INPUT_SPECS['time_base'], default='receipt')
        return {**INPUT_SPECS, 'time_base': time_base, 'frame_id': ParamSpec(
            cls.FRAME_ID, f'frame id of the poses ({cls.LABEL} stage axes as REP 103)')}

    def __init__(self, **kwargs):
        super().__init__(self.NODE_NAME, **kwargs)
        self._input = None
        values = declare_parameters(self, self.parameter_specs(), read_only=True)
        self._frame_id = values['frame_id']
        self._time_base = TimeBase.from_values(values)
        self.published = 0
        self._pub = self.create_publisher(PoseStamped, 'pose_out', 10)
        self._lens_pub = self.create_publisher(Vector3Stamped, 'lens_out', 10)
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._input = TrackingInput.from_values(self.PROTOCOL, values, self._on_measurement)
        drop_log = DropLog(self.get_logger(), lambda: self._input.dropped)
        self._input.on_drop = lambda reason, data, sender: drop_log(
            f'a {len(data)}-byte datagram from {sender[0]}:{sender[1]}', reason)
        self._diag_timer = self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics)
        self._input.start()
        host, port = self._input.udp.address
        self.get_logger().info(f'listening for {self.LABEL} on udp {host}:{port}')

    @property
    def address(self):
        """(host, port) the node listens on."""
        return self._input.udp.address

    def _on_measurement(self, measurement, sender, arrival_ns):
        # Arrival on the node clock: now, less the time since the datagram was read.
        now = self.get_clock().now().nanoseconds
        arrival = (now - (time.monotonic_ns() - arrival_ns)) * 1e-9
        t = self._time_base.stamp(arrival, measurement.source_time)
        stamp = Time(nanoseconds=round(t * 1e9)).to_msg()
        lens = self._lens(measurement.carried)
        if lens is not None:
            msg = Vector3Stamped()
            msg.header.stamp, msg.header.frame_id = stamp, self._frame_id
            msg.vector.x, msg.vector.y, msg.vector.z = lens
            self._lens_pub.publish(msg)  # first, so a sender has it when the pose arrives
        self._pub.publish(conversions.make_pose_stamped(
            stamp, self._frame_id, measurement.position, measurement.quaternion))
        self.published += 1

    @staticmethod
    def _lens(packet):
        """(x, y, z) of lens_out for what a sample carries, or None."""
        return float(packet.zoom), float(packet.focus), float(packet.spare)

    def _publish_diagnostics(self):
        if self._input.valid == 0:
            level, message = DiagnosticStatus.WARN, f'no valid {self.LABEL} received yet'
        else:
            level, message = DiagnosticStatus.OK, f'receiving {self.LABEL}'
        host, port = self._input.udp.address
        self._diag_pub.publish(diagnostic_array(self, f'{self.LABEL} input', level, message, {
            'address': f'{host}:{port}',
            'received': self._input.udp.received,
            'published': self.published,
            **drop_figures('dropped', self._input.dropped),
            'time_base_resyncs': self._time_base.resyncs,
        }, f'udp://{host}:{port}'))

    def destroy_node(self):
        """Stop the receiver thread, then destroy the node."""
        if self._input is not None:
            self._input.stop()
        return super().destroy_node()


class OpenTrackIOReceiverNode(FreedReceiverNode):
    """OpenTrackIO over UDP -> pose_out and lens_out; see the module docstring."""

    NODE_NAME = 'opentrackio_receiver'
    PROTOCOL = 'opentrackio'
    LABEL = 'OpenTrackIO'
    FRAME_ID = 'opentrackio_stage'

    @staticmethod
    def _lens(sample):
        encoders = (sample.get('lens') or {}).get('encoders')
        if not encoders:
            return None
        return tuple(float(encoders.get(axis, math.nan)) for axis in ('zoom', 'focus', 'iris'))


def main(args=None):
    """Run the FreeD receiver (console script `freed_receiver`)."""
    return run_node(FreedReceiverNode, args)


def main_opentrackio(args=None):
    """Run the OpenTrackIO receiver (console script `opentrackio_receiver`)."""
    return run_node(OpenTrackIOReceiverNode, args)


if __name__ == '__main__':
    sys.exit(main())

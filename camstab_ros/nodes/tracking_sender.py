"""
The `freed_sender` and `opentrackio_sender` nodes: PoseStamped -> tracking over UDP.

Topics (relative names):
- sub `pose_in` geometry_msgs/PoseStamped, sensor-data QoS (best effort, depth 5): one
  FreeD datagram / OpenTrackIO sample per pose;
- sub `lens_in` geometry_msgs/Vector3Stamped, sensor-data QoS: the latest values go out
  with every pose. FreeD: x zoom, y focus, z spare (raw counts; 0 until the first
  arrives). OpenTrackIO: x zoom, y focus, z iris as `lens.encoders` (0..1; NaN: absent);
- pub `/diagnostics` diagnostic_msgs/DiagnosticArray at 1 Hz.

A pose that cannot be encoded (non-finite, zero quaternion, position beyond FreeD's
+-131 m) is dropped and counted, as is a datagram the network refused and a lens value
out of its range. An OpenTrackIO sample carries the pose's stamp as its sampleTimestamp.
"""
import math
import sys

from camstab_ros.core.validation import drop_figures
from camstab_ros.io import freed, opentrackio
from camstab_ros.io.tracking_udp import OUTPUT_SPECS, TrackingOutput
from camstab_ros.nodes import conversions
from camstab_ros.nodes.scaffolding import (declare_parameters, diagnostic_array,
                                           DIAGNOSTICS_PERIOD_S, DropLog, run_node)
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseStamped, Vector3Stamped
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data


# Largest raw zoom, focus and spare values of a D1 message.
LENS_LIMITS = (0xFFFFFF, 0xFFFFFF, 0xFFFF)


class FreedSenderNode(Node):
    """pose_in (+ lens_in) -> FreeD datagrams; see the module docstring."""

    NODE_NAME = 'freed_sender'
    PROTOCOL = 'freed'
    LABEL = 'FreeD'

    @classmethod
    def parameter_specs(cls):
        """Every parameter of the node (all read-only): {name: ParamSpec}."""
        specs = dict(OUTPUT_SPECS)
        if cls.PROTOCOL != 'opentrackio':
            del specs['opentrackio_encoding']
        return specs

    def __init__(self, **kwargs):
        super().__init__(self.NODE_NAME, **kwargs)
        self._output = None
        values = declare_parameters(self, self.parameter_specs(), read_only=True)
        values.setdefault('opentrackio_encoding', 'json')
        self._output = TrackingOutput.from_values(self.PROTOCOL, values)
        drop_log = DropLog(self.get_logger(), lambda: self._output.dropped)
        self._output.on_drop = lambda reason, detail: drop_log(f'an output pose: {detail}',
                                                               reason)
        self._lens = None
        self.received = 0
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        # lens_in first: when both are ready the executor serves it first.
        self._lens_sub = self.create_subscription(Vector3Stamped, 'lens_in', self._on_lens,
                                                  qos_profile_sensor_data)
        self._sub = self.create_subscription(PoseStamped, 'pose_in', self._on_pose,
                                             qos_profile_sensor_data)
        self._diag_timer = self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics)
        host, port = self._output.udp.destination
        self.get_logger().info(f'sending {self.LABEL} to udp {host}:{port}')

    def _on_lens(self, msg):
        values = (msg.vector.x, msg.vector.y, msg.vector.z)
        lens = self._lens_values(values)
        if lens is None:
            self._output.drop('lens_out_of_range', f'lens values {values} ignored')
        else:
            self._lens = lens

    @staticmethod
    def _lens_values(values):
        """Return the lens values to send, or None if out of range."""
        if all(0.0 <= v <= top for v, top in zip(values, LENS_LIMITS)):
            return tuple(int(round(v)) for v in values)
        return None

    def _carried(self, t):
        """Return what goes out with a pose stamped t (the latest lens values)."""
        zoom, focus, spare = self._lens or (0, 0, 0)
        return freed.FreeDPacket(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, zoom, focus, spare)

    def _on_pose(self, msg):
        self.received += 1
        t, position, quaternion = conversions.pose_stamped_to_arrays(msg)
        self._output.send(position, quaternion, self._carried(t))

    def _publish_diagnostics(self):
        dropped = self._output.dropped
        level = DiagnosticStatus.OK if self.received else DiagnosticStatus.WARN
        message = f'sending {self.LABEL}' if self.received else 'no pose received yet'
        host, port = self._output.udp.destination
        figures = {'destination': f'{host}:{port}', 'received': self.received,
                   'sent': self._output.udp.sent, **drop_figures('dropped', dropped)}
        self._diag_pub.publish(diagnostic_array(self, f'{self.LABEL} output', level, message,
                                                figures, f'udp://{host}:{port}'))

    def destroy_node(self):
        """Close the socket, then destroy the node."""
        if self._output is not None:
            self._output.close()
        return super().destroy_node()


class OpenTrackIOSenderNode(FreedSenderNode):
    """pose_in (+ lens_in) -> OpenTrackIO samples; see the module docstring."""

    NODE_NAME = 'opentrackio_sender'
    PROTOCOL = 'opentrackio'
    LABEL = 'OpenTrackIO'

    @staticmethod
    def _lens_values(values):
        if all(math.isnan(v) or 0.0 <= v <= 1.0 for v in values):
            return {axis: v for axis, v in zip(('zoom', 'focus', 'iris'), values)
                    if not math.isnan(v)}
        return None

    def _carried(self, t):
        number = self._output.camera_id if self._output.camera_id >= 0 else 1
        sample = opentrackio.make_sample(
            [0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0], self._output.source_id, number,
            stamp_s=t if t >= 0.0 else None, encoders=self._lens)
        del sample['sampleId']  # a template, never sent: the output gets its own id
        return sample


def main(args=None):
    """Run the FreeD sender (console script `freed_sender`)."""
    return run_node(FreedSenderNode, args)


def main_opentrackio(args=None):
    """Run the OpenTrackIO sender (console script `opentrackio_sender`)."""
    return run_node(OpenTrackIOSenderNode, args)


if __name__ == '__main__':
    sys.exit(main())

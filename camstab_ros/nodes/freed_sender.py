"""
The `freed_sender` node: PoseStamped -> FreeD D1 over UDP, one datagram per pose.

Topics (relative names):
- sub `pose_in` geometry_msgs/PoseStamped, sensor-data QoS (best effort, depth 5);
- sub `lens_in` geometry_msgs/Vector3Stamped (x zoom, y focus, z spare, raw counts),
  sensor-data QoS: the latest values go out with every pose (0 until the first arrives);
- pub `/diagnostics` diagnostic_msgs/DiagnosticArray at 1 Hz.

A pose that cannot be encoded (non-finite, zero quaternion, position beyond FreeD's
+-131 m) is dropped and counted, as is a datagram the network refused.
"""
import sys

from camstab_ros.core.validation import drop_figures
from camstab_ros.io.freed_udp import FreedOutput, OUTPUT_SPECS
from camstab_ros.nodes import conversions
from camstab_ros.nodes.scaffolding import (declare_parameters, diagnostic_array,
                                           DIAGNOSTICS_PERIOD_S, DropLog, run_node)
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseStamped, Vector3Stamped
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data


# Largest raw zoom, focus and spare values of a D1 message.
LENS_LIMITS = (0xFFFFFF, 0xFFFFFF, 0xFFFF)


def parameter_specs():
    """Every parameter of the node (all read-only): {name: ParamSpec}."""
    return dict(OUTPUT_SPECS)


class FreedSenderNode(Node):
    """pose_in (+ lens_in) -> FreeD datagrams; see the module docstring."""

    NODE_NAME = 'freed_sender'

    def __init__(self, **kwargs):
        super().__init__(self.NODE_NAME, **kwargs)
        self._output = None
        values = declare_parameters(self, parameter_specs(), read_only=True)
        self._output = FreedOutput.from_values(values)
        drop_log = DropLog(self.get_logger(), lambda: self._output.dropped)
        self._output.on_drop = lambda reason, detail: drop_log(f'an output pose: {detail}',
                                                               reason)
        self._lens = (0, 0, 0)
        self.received = 0
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        # lens_in first: when both are ready the executor serves it first.
        self._lens_sub = self.create_subscription(Vector3Stamped, 'lens_in', self._on_lens,
                                                  qos_profile_sensor_data)
        self._sub = self.create_subscription(PoseStamped, 'pose_in', self._on_pose,
                                             qos_profile_sensor_data)
        self._diag_timer = self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics)
        host, port = self._output.udp.destination
        self.get_logger().info(f'sending FreeD to udp {host}:{port}')

    def _on_lens(self, msg):
        values = (msg.vector.x, msg.vector.y, msg.vector.z)
        if all(0.0 <= v <= top for v, top in zip(values, LENS_LIMITS)):
            self._lens = tuple(int(round(v)) for v in values)
        else:
            self._output.drop('lens_out_of_range', f'lens values {values} ignored')

    def _on_pose(self, msg):
        self.received += 1
        _, position, quaternion = conversions.pose_stamped_to_arrays(msg)
        zoom, focus, spare = self._lens
        self._output.send(position, quaternion, zoom=zoom, focus=focus, spare=spare)

    def _publish_diagnostics(self):
        dropped = self._output.dropped
        level = DiagnosticStatus.OK if self.received else DiagnosticStatus.WARN
        message = 'sending FreeD' if self.received else 'no pose received yet'
        host, port = self._output.udp.destination
        self._diag_pub.publish(diagnostic_array(self, 'FreeD output', level, message, {
            'destination': f'{host}:{port}',
            'received': self.received,
            'sent': self._output.udp.sent,
            **drop_figures('dropped', dropped),
        }, f'udp://{host}:{port}'))

    def destroy_node(self):
        """Close the socket, then destroy the node."""
        if self._output is not None:
            self._output.close()
        return super().destroy_node()


def main(args=None):
    """Run the node (console script `freed_sender`)."""
    return run_node(FreedSenderNode, args)


if __name__ == '__main__':
    sys.exit(main())

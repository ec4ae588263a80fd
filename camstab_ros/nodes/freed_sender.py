"""The `freed_sender` node: PoseStamped -> FreeD D1 over UDP, one datagram per pose.

Topics (relative names):
- sub `pose_in` geometry_msgs/PoseStamped, sensor-data QoS (best effort, depth 5);
- sub `lens_in` geometry_msgs/Vector3Stamped (x zoom, y focus, z spare, raw counts),
  sensor-data QoS: the latest values go out with every pose (0 until the first arrives);
- pub `/diagnostics` diagnostic_msgs/DiagnosticArray at 1 Hz.

A pose that cannot be encoded (non-finite, zero quaternion, position beyond FreeD's
+-131 m) is dropped and counted, as is a datagram the network refused.
"""
import sys
from collections import Counter

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseStamped, Vector3Stamped
from rcl_interfaces.msg import IntegerRange, ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data

from camstab_ros.io import freed
from camstab_ros.io.udp import UdpSender, parse_host_port
from camstab_ros.nodes import conversions
from camstab_ros.nodes.freed_receiver import (DIAGNOSTICS_PERIOD_S, DropLog,
                                              diagnostic_array, run_node)

NODE_NAME = 'freed_sender'
DROP_REASONS = ('not_encodable', 'send_failed', 'lens_out_of_range')


def output_parameters():
    """{name: (default, description)} of the FreeD output parameters (sender and bridge)."""
    return {
        'destination': ('127.0.0.1:40001', 'HOST:PORT the FreeD datagrams are sent to'),
        'camera_id': (-1, 'camera id byte sent; -1: that of the input (0 if none)'),
    }


def declare_output_parameters(node):
    """Declare the output parameters on node; return their values (ValueError if invalid)."""
    for name, (default, description) in output_parameters().items():
        descriptor = ParameterDescriptor(
            name=name, description=f'{description}; default {default!r}', read_only=True)
        if name == 'camera_id':
            descriptor.integer_range = [IntegerRange(from_value=-1, to_value=255, step=1)]
        node.declare_parameter(name, default, descriptor)
    values = {name: node.get_parameter(name).value for name in output_parameters()}
    values['host'], values['port'] = parse_host_port(values['destination'])
    return values


class FreedOutput:
    """ROS-free FreeD output: pose + lens values -> one D1 datagram, drops counted."""

    def __init__(self, host, port, camera_id=-1, on_drop=None):
        self.udp = UdpSender(host, port)
        self.camera_id = camera_id
        self.on_drop = on_drop
        self.dropped = Counter({reason: 0 for reason in DROP_REASONS})

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
        """Count (and report) one dropped output; returns False."""
        self.dropped[reason] += 1
        if self.on_drop is not None:
            self.on_drop(reason, detail)
        return False

    def close(self):
        self.udp.close()


class SendLog(DropLog):
    """Rate-limited warning for a dropped output pose."""

    def __call__(self, reason, detail):
        super().__call__(reason, b'', ('output', detail))


class FreedSenderNode(Node):
    """pose_in (+ lens_in) -> FreeD datagrams; see the module docstring."""

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        self._output = None
        values = declare_output_parameters(self)
        self._output = FreedOutput(values['host'], values['port'], values['camera_id'])
        self._output.on_drop = SendLog(self.get_logger(), lambda: self._output.dropped)
        self._lens = (0, 0, 0)
        self.received = 0
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        # lens_in first: when both are ready the executor serves it first.
        self._lens_sub = self.create_subscription(Vector3Stamped, 'lens_in', self._on_lens,
                                                  qos_profile_sensor_data)
        self._sub = self.create_subscription(PoseStamped, 'pose_in', self._on_pose,
                                             qos_profile_sensor_data)
        self._diag_timer = self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics)
        self.get_logger().info(f'sending FreeD to udp {values["host"]}:{values["port"]}')

    def _on_lens(self, msg):
        values = (msg.vector.x, msg.vector.y, msg.vector.z)
        limits = (0xFFFFFF, 0xFFFFFF, 0xFFFF)
        if all(0.0 <= v <= top for v, top in zip(values, limits)):
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
            'dropped': sum(dropped.values()),
            **{f'dropped.{reason}': n for reason, n in dropped.items()},
        }))

    def destroy_node(self):
        if self._output is not None:
            self._output.close()
        return super().destroy_node()


def main(args=None):
    return run_node(FreedSenderNode, NODE_NAME, args)


if __name__ == '__main__':
    sys.exit(main())

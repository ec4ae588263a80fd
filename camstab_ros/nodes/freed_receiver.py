"""
The `freed_receiver` node: FreeD D1 over UDP -> PoseStamped and lens values.

Topics (relative names):
- pub `pose_out` geometry_msgs/PoseStamped, reliable, depth 10: one per valid datagram,
  REP 103 pose by the FreeD mapping of Unreal's LiveLink FreeD source, in `frame_id`;
- pub `lens_out` geometry_msgs/Vector3Stamped, reliable, depth 10, same stamp as the pose:
  x = zoom, y = focus, z = spare (raw FreeD encoder counts); `freed_sender` passes them on;
- pub `/diagnostics` diagnostic_msgs/DiagnosticArray at 1 Hz: received, published and
  every drop counted by reason.

Datagrams are read by a thread of their own (see `io.freed_udp.FreedInput`); malformed
ones (wrong length, wrong type byte, bad checksum) are dropped, counted and logged at most
once per second.
"""
import sys
import time

from camstab_ros.core.params import ParamSpec
from camstab_ros.core.validation import drop_figures
from camstab_ros.io import freed
from camstab_ros.io.freed_udp import FreedInput, INPUT_SPECS, TimeBase
from camstab_ros.nodes import conversions
from camstab_ros.nodes.scaffolding import (declare_parameters, diagnostic_array,
                                           DIAGNOSTICS_PERIOD_S, DropLog, run_node)
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseStamped, Vector3Stamped
from rclpy.node import Node
from rclpy.time import Time


SPECS = {**INPUT_SPECS, 'frame_id': ParamSpec(
    'freed_studio', 'frame id of the poses (FreeD studio axes as REP 103)')}


def parameter_specs():
    """Every parameter of the node (all read-only): {name: ParamSpec}."""
    return dict(SPECS)


class FreedReceiverNode(Node):
    """FreeD over UDP -> pose_out and lens_out; see the module docstring."""

    NODE_NAME = 'freed_receiver'

    def __init__(self, **kwargs):
        super().__init__(self.NODE_NAME, **kwargs)
        self._input = None
        values = declare_parameters(self, parameter_specs(), read_only=True)
        self._frame_id = values['frame_id']
        self._time_base = TimeBase.from_values(values)
        self.published = 0
        self._pub = self.create_publisher(PoseStamped, 'pose_out', 10)
        self._lens_pub = self.create_publisher(Vector3Stamped, 'lens_out', 10)
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._input = FreedInput.from_values(values, self._on_packet)
        drop_log = DropLog(self.get_logger(), lambda: self._input.dropped)
        self._input.on_drop = lambda reason, data, sender: drop_log(
            f'a {len(data)}-byte datagram from {sender[0]}:{sender[1]}', reason)
        self._diag_timer = self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics)
        self._input.start()
        host, port = self._input.udp.address
        self.get_logger().info(f'listening for FreeD on udp {host}:{port}')

    @property
    def address(self):
        """(host, port) the node listens on."""
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
            **drop_figures('dropped', dropped),
            'time_base_resyncs': self._time_base.resyncs,
        }, f'udp://{host}:{port}'))

    def destroy_node(self):
        """Stop the receiver thread, then destroy the node."""
        if self._input is not None:
            self._input.stop()
        return super().destroy_node()


def main(args=None):
    """Run the node (console script `freed_receiver`)."""
    return run_node(FreedReceiverNode, args)


if __name__ == '__main__':
    sys.exit(main())

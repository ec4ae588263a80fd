"""
The `freed_bridge` node: FreeD in -> stabiliser -> FreeD out in one process, no DDS hop.

Each valid datagram goes, in the UDP receiver thread, through the core `Stabilizer` (the
`stabilizer` node's pipeline), and every released estimate leaves at once as a D1
datagram carrying the input's camera id, zoom, focus and spare values. ROS serves only
for parameters and `/diagnostics` (1 Hz).

Parameters: the UDP input ones of `freed_receiver` but frame_id (FreeD has no frames),
the output ones of `freed_sender` (all read-only), and the pipeline ones of `stabilizer`
(method, <method>.<param>, the shared smoother parameters, switch_blend_s), which can be
changed at run time.
"""
import sys
import threading
import time

from camstab_ros.core import stabilizer as pipeline
from camstab_ros.core.validation import drop_figures
from camstab_ros.io import freed
from camstab_ros.io.freed_udp import FreedInput, FreedOutput, INPUT_SPECS, OUTPUT_SPECS, TimeBase
from camstab_ros.nodes.scaffolding import (current_values, declare_parameters, diagnostic_array,
                                           DIAGNOSTICS_PERIOD_S, DropLog, run_node,
                                           watch_parameters)
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.node import Node


HOUSEKEEPING_HZ = 10.0


def parameter_specs():
    """Every parameter of the node: {name: ParamSpec}, in declaration order."""
    return {**pipeline.parameter_specs(), **INPUT_SPECS, **OUTPUT_SPECS}


class FreedBridgeNode(Node):
    """FreeD -> Stabilizer -> FreeD; see the module docstring."""

    NODE_NAME = 'freed_bridge'

    def __init__(self, **kwargs):
        super().__init__(self.NODE_NAME, **kwargs)
        self._input = None
        self._output = None
        self._specs = pipeline.parameter_specs()
        values = declare_parameters(self, self._specs)
        values.update(declare_parameters(self, {**INPUT_SPECS, **OUTPUT_SPECS},
                                         read_only=True))
        self._stabilizer = pipeline.Stabilizer.from_values(values)
        self._lock = threading.Lock()
        self._staged = None
        self._last_arrival = time.monotonic()
        self._time_base = TimeBase.from_values(values)
        self._output = FreedOutput.from_values(values)
        send_log = DropLog(self.get_logger(), lambda: self._output.dropped)
        self._output.on_drop = lambda reason, detail: send_log(f'an output pose: {detail}',
                                                               reason)
        self._pose_log = DropLog(self.get_logger(), lambda: self._stabilizer.dropped_by_reason)
        self._input = FreedInput.from_values(values, self._on_packet)
        drop_log = DropLog(self.get_logger(), lambda: self._input.dropped)
        self._input.on_drop = lambda reason, data, sender: drop_log(
            f'a {len(data)}-byte datagram from {sender[0]}:{sender[1]}', reason)
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._diag_timer = self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics)
        self._housekeeping = self.create_timer(1.0 / HOUSEKEEPING_HZ, self._on_housekeeping)
        watch_parameters(self, self._specs, self._validate_parameters,
                         self._apply_parameters)
        self._input.start()
        host, port = self._input.udp.address
        dest_host, dest_port = self._output.udp.destination
        self.get_logger().info(
            f'bridging FreeD udp {host}:{port} -> {dest_host}:{dest_port} with '
            f'{values["method"]!r} (delay {self._stabilizer.smoother.delay_frames} frames)')

    @property
    def address(self):
        """(host, port) the bridge listens on."""
        return self._input.udp.address

    # -- data path (receiver thread) ---------------------------------------------------

    def _on_packet(self, packet, sender, arrival_ns):
        position, quaternion = freed.packet_to_pose(packet)
        lens = (packet.camera_id, packet.zoom, packet.focus, packet.spare)
        with self._lock:
            self._last_arrival = arrival_ns * 1e-9
            t = self._time_base.stamp(self._last_arrival)
            reason, outputs = self._stabilizer.process(t, position, quaternion, lens)
            self._send(outputs)
            if reason is not None:
                detail = self._stabilizer.drop_detail(reason)
                self._pose_log(f'a FreeD pose from {sender[0]}:{sender[1]}{detail}', reason)

    def _send(self, outputs):
        for out in outputs:
            camera_id, zoom, focus, spare = out.tag  # the input's lens values
            self._output.send(out.position, out.quaternion, camera_id, zoom, focus, spare)

    # -- parameters and housekeeping (executor thread) ---------------------------------

    def _validate_parameters(self, changes):
        self._staged = None
        self._staged = pipeline.staged_smoother(
            self._specs, current_values(self, self._specs), changes)

    def _apply_parameters(self, values, changed):
        with self._lock:
            self._stabilizer.apply_values(values)
            if self._staged is not None:
                self._send(self._stabilizer.switch(self._staged))
                self._staged = None
                self.get_logger().info(f'smoother now {values["method"]!r}')

    def _on_housekeeping(self):
        with self._lock:
            idle_s = time.monotonic() - self._last_arrival
            self._send(self._stabilizer.idle(idle_s))

    def _publish_diagnostics(self):
        with self._lock:
            figures = self._stabilizer.diagnostics()
            received = self._stabilizer.received
        input_drops = self._input.dropped
        output_drops = self._output.dropped
        level, message = DiagnosticStatus.OK, f'bridging FreeD with {figures["method"]}'
        if received == 0:
            level, message = DiagnosticStatus.WARN, 'no valid FreeD received yet'
        host, port = self._input.udp.address
        dest_host, dest_port = self._output.udp.destination
        self._diag_pub.publish(diagnostic_array(self, 'FreeD bridge', level, message, {
            'address': f'{host}:{port}',
            'destination': f'{dest_host}:{dest_port}',
            'datagrams_received': self._input.udp.received,
            'sent': self._output.udp.sent,
            **drop_figures('dropped_input', input_drops),
            **drop_figures('dropped_output', output_drops),
            **figures,
        }, f'udp://{host}:{port}'))

    def destroy_node(self):
        """Stop the receiver thread and close the sockets, then destroy the node."""
        if self._input is not None:
            self._input.stop()
        if self._output is not None:
            self._output.close()
        return super().destroy_node()


def main(args=None):
    """Run the node (console script `freed_bridge`)."""
    return run_node(FreedBridgeNode, args)


if __name__ == '__main__':
    sys.exit(main())

"""The `freed_bridge` node: FreeD in -> stabiliser -> FreeD out in one process, no DDS hop.

Each valid datagram goes, in the UDP receiver thread, through the same `Stabilizer`
(validation, smoother, switch cross-fade) as the `stabilizer` node, and every released
estimate leaves at once as a D1 datagram carrying the input's camera id, zoom, focus and
spare values. ROS serves only for parameters and `/diagnostics` (1 Hz).

Parameters: the UDP input ones of `freed_receiver` (bind_address, port, allowed_senders,
queue_size, time_base, frame_rate_hz), the output ones of `freed_sender` (destination,
camera_id) and the smoother ones of `stabilizer` (method, <method>.<param>, node-level
smoother parameters, switch_blend_s), which can be changed at run time.
"""
import sys
import threading
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node

from camstab_ros.core.smoother import ParameterError
from camstab_ros.io import freed
from camstab_ros.nodes import conversions, stabilizer as stab
from camstab_ros.nodes.freed_receiver import (DIAGNOSTICS_PERIOD_S, DropLog, FreedInput,
                                              declare_input_parameters, diagnostic_array,
                                              make_time_base, run_node)
from camstab_ros.nodes.freed_sender import FreedOutput, SendLog, declare_output_parameters

NODE_NAME = 'freed_bridge'
# Frame id given to the stabiliser (FreeD has none; all input is in one frame).
FRAME_ID = 'freed_studio'
# Parameters of `stabilizer` that concern its ROS outputs, not the smoother.
NOT_BRIDGED = ('timer_rate_hz', 'input_frame_id', 'output_frame_id', 'publish_cov',
               'publish_path', 'path_length', 'publish_tf', 'tf_child_frame_id')
HOUSEKEEPING_HZ = 10.0


def smoother_specs():
    """{name: ParamSpec} of the bridge's smoother parameters (those of `stabilizer`)."""
    return {name: spec for name, spec in stab.parameter_specs().items()
            if name not in NOT_BRIDGED}


class FreedBridgeNode(Node):
    """FreeD -> Stabilizer -> FreeD; see the module docstring."""

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        self._input = None
        self._output = None
        self._specs = smoother_specs()
        for name, spec in self._specs.items():
            self.declare_parameter(name, spec.default, conversions.parameter_descriptor(name, spec))
        values = self._values()
        stab.check_method(values['method'])
        for name, value in values.items():
            self._specs[name].coerce(name, value)
        self._stabilizer = stab.Stabilizer(stab.build_smoother(values),
                                           values['dropout_timeout_s'],
                                           values['switch_blend_s'], FRAME_ID)
        self._lock = threading.Lock()
        self._staged = None
        self._last_arrival = time.monotonic()
        input_values = declare_input_parameters(self)
        output_values = declare_output_parameters(self)
        self._time_base = make_time_base(input_values)
        self._output = FreedOutput(output_values['host'], output_values['port'],
                                   output_values['camera_id'])
        self._output.on_drop = SendLog(self.get_logger(), lambda: self._output.dropped)
        self._input = FreedInput(
            input_values['bind_address'], input_values['port'], self._on_packet,
            input_values['allowed_senders'], input_values['queue_size'])
        self._input.on_drop = DropLog(self.get_logger(), lambda: self._input.dropped)
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._diag_timer = self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics)
        self._housekeeping = self.create_timer(1.0 / HOUSEKEEPING_HZ, self._on_housekeeping)
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self._input.start()
        host, port = self._input.udp.address
        dest_host, dest_port = self._output.udp.destination
        self.get_logger().info(
            f'bridging FreeD udp {host}:{port} -> {dest_host}:{dest_port} with '
            f'{values["method"]!r} (delay {self._stabilizer.smoother.delay_frames} frames)')

    @property
    def address(self):
        return self._input.udp.address

    def _values(self):
        return {name: self.get_parameter(name).value for name in self._specs}

    # -- data path (receiver thread) ---------------------------------------------------

    def _on_packet(self, packet, sender, arrival_ns):
        position, quaternion = freed.packet_to_pose(packet)
        lens = (packet.camera_id, packet.zoom, packet.focus, packet.spare)
        with self._lock:
            self._last_arrival = arrival_ns * 1e-9
            t = self._time_base.stamp(self._last_arrival)
            _, outputs = self._stabilizer.process(t, position, quaternion, lens, FRAME_ID)
            self._send(outputs)

    def _send(self, outputs):
        for out in outputs:
            camera_id, zoom, focus, spare = out.stamp  # the input's lens values
            self._output.send(out.position, out.quaternion, camera_id, zoom, focus, spare)

    # -- parameters and housekeeping (executor thread) ---------------------------------

    def _validate_parameters(self, parameters):
        try:
            self._staged = stab.staged_smoother(self._specs, self._values(), parameters)
        except (ParameterError, ValueError, OSError) as exc:
            self._staged = None
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def _apply_parameters(self, parameters):
        values = self._values()
        with self._lock:
            self._stabilizer.dropout_timeout_s = values['dropout_timeout_s']
            self._stabilizer.blend_s = values['switch_blend_s']
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
            stabilizer = self._stabilizer
            smoother = stabilizer.smoother
            invalid = stabilizer.dropped_by_reason
            stats = stabilizer.stats
            costs = np.fromiter(stabilizer.costs_us, dtype=float)
            received, published = stabilizer.received, stabilizer.published
        input_drops = self._input.dropped
        output_drops = self._output.dropped
        level, message = DiagnosticStatus.OK, f'bridging FreeD with {smoother.name}'
        if received == 0:
            level, message = DiagnosticStatus.WARN, 'no valid FreeD received yet'
        host, port = self._input.udp.address
        dest_host, dest_port = self._output.udp.destination
        self._diag_pub.publish(diagnostic_array(self, 'FreeD bridge', level, message, {
            'address': f'{host}:{port}',
            'destination': f'{dest_host}:{dest_port}',
            'method': smoother.name,
            'delay_frames': smoother.delay_frames,
            'datagrams_received': self._input.udp.received,
            'poses_received': received,
            'sent': self._output.udp.sent,
            'dropped_input': sum(input_drops.values()),
            **{f'dropped.{reason}': n for reason, n in input_drops.items()},
            **{f'dropped.{reason}': n for reason, n in invalid.items()},
            **{f'dropped.{reason}': n for reason, n in output_drops.items()},
            'published': published,
            'outliers_rejected': stats.outliers,
            'resets': stats.resets,
            'coasted': stats.coasted,
            'processing_us_median': f'{stab.percentile(costs, 50):.1f}',
            'processing_us_p99': f'{stab.percentile(costs, 99):.1f}',
        }))

    def destroy_node(self):
        if self._input is not None:
            self._input.stop()
        if self._output is not None:
            self._output.close()
        return super().destroy_node()


def main(args=None):
    return run_node(FreedBridgeNode, NODE_NAME, args)


if __name__ == '__main__':
    sys.exit(main())

"""
FreeD tracker -> camera stabiliser -> FreeD to the render engine, in one process.

    ros2 launch camstab_ros freed_bridge.launch.py port:=40000 destination:=10.0.0.20:40001

The bridge listens for FreeD D1 on udp bind_address:port, stabilises every pose with the
same pipeline as the `stabilizer` node and sends each one on at once to `destination`
(e.g. Unreal's LiveLink FreeD source), with the input's camera id, zoom, focus and spare.
Every other parameter comes from params_file (the `freed_bridge` entry of
config/params.yaml); method and <method>.<param> can be changed at run time with
`ros2 param set /freed_bridge ...`.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument(
            'method', default_value='kalman',
            description='smoothing method (a causal method: passthrough, ema, one_euro, '
                        'kalman, fixed_lag, lstm, hybrid)'),
        DeclareLaunchArgument(
            'bind_address', default_value='0.0.0.0',
            description='local address to listen on for FreeD'),
        DeclareLaunchArgument(
            'port', default_value='40000',
            description='UDP port to listen on for FreeD (the tracker sends here)'),
        DeclareLaunchArgument(
            'destination', default_value='127.0.0.1:40001',
            description='HOST:PORT the stabilised FreeD goes to (the render engine)'),
        DeclareLaunchArgument(
            'params_file',
            default_value=PathJoinSubstitution(
                [FindPackageShare('camstab_ros'), 'config', 'params.yaml']),
            description='YAML parameters (keyed by node name; the freed_bridge entry)'),
        Node(
            package='camstab_ros', executable='freed_bridge', name='freed_bridge',
            parameters=[LaunchConfiguration('params_file'), {
                'method': LaunchConfiguration('method'),
                'bind_address': LaunchConfiguration('bind_address'),
                'port': LaunchConfiguration('port'),
                'destination': LaunchConfiguration('destination')}],
            output='screen'),
    ])

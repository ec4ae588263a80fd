"""
Camera tracker -> camera stabiliser -> render engine, in one process, FreeD or OpenTrackIO.

    ros2 launch camstab_ros tracking_bridge.launch.py port:=40000 destination:=10.0.0.20:40001
    ros2 launch camstab_ros tracking_bridge.launch.py input_protocol:=freed \
        output_protocol:=opentrackio destination:=239.135.1.1:55555 output_rate:=24000/1001

The bridge listens for input_protocol on udp bind_address:port, stabilises every pose
with the same pipeline as the `stabilizer` node and sends it on in output_protocol to
`destination` (e.g. Unreal's LiveLink FreeD or OpenTrackIO source): at once, or one pose
per video frame at output_rate. Every other parameter comes from params_file (the
`tracking_bridge` entry of config/params.yaml); method and <method>.<param> can be
changed at run time with `ros2 param set /tracking_bridge ...`.
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
                        'kalman, imm, fixed_lag, lstm, hybrid)'),
        DeclareLaunchArgument(
            'input_protocol', default_value='freed',
            description='protocol the tracker sends: freed or opentrackio'),
        DeclareLaunchArgument(
            'output_protocol', default_value='freed',
            description='protocol the render engine receives: freed or opentrackio'),
        DeclareLaunchArgument(
            'bind_address', default_value='0.0.0.0',
            description='local address to listen on; 239.135.1.N joins OpenTrackIO '
                        'source N'),
        DeclareLaunchArgument(
            'port', default_value='-1',
            description='UDP port to listen on (the tracker sends here); -1: FreeD 40000, '
                        'OpenTrackIO 55555'),
        DeclareLaunchArgument(
            'destination', default_value='',
            description='HOST:PORT the stabilised poses go to (the render engine); empty: '
                        'FreeD 127.0.0.1:40001, OpenTrackIO 239.135.1.1:55555'),
        DeclareLaunchArgument(
            'output_rate', default_value='input',
            description='input: one output per tracker sample; or a video frame rate '
                        '(24000/1001, 25, 59.94): one interpolated pose per frame'),
        DeclareLaunchArgument(
            'params_file',
            default_value=PathJoinSubstitution(
                [FindPackageShare('camstab_ros'), 'config', 'params.yaml']),
            description='YAML parameters (keyed by node name; the tracking_bridge entry)'),
        Node(
            package='camstab_ros', executable='tracking_bridge', name='tracking_bridge',
            parameters=[LaunchConfiguration('params_file'), {
                'method': LaunchConfiguration('method'),
                'input_protocol': LaunchConfiguration('input_protocol'),
                'output_protocol': LaunchConfiguration('output_protocol'),
                'bind_address': LaunchConfiguration('bind_address'),
                'port': LaunchConfiguration('port'),
                'destination': LaunchConfiguration('destination'),
                'output_rate': LaunchConfiguration('output_rate')}],
            output='screen'),
    ])

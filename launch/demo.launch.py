"""
Jitter simulator -> camera stabiliser (-> RViz): the live demo on a ROS 2 install.

    ros2 launch camstab_ros demo.launch.py method:=fixed_lag scenario:=handheld use_rviz:=true

Topics: /camera/pose_truth, /camera/pose_noisy (+ /camera/path_truth, /camera/path_noisy)
from the simulator, /camera/pose_stabilized (+ /camera/pose_stabilized_cov,
/camera/path_stabilized) from the stabiliser.
`camstab demo` starts the same two executables with the same parameters and remappings
without `launch` (camstab_ros/tools/demo.py).
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
    params_file = LaunchConfiguration('params_file')
    return LaunchDescription([
        DeclareLaunchArgument(
            'method', default_value='kalman',
            description='smoothing method of the stabiliser (a causal method: passthrough, '
                        'ema, one_euro, kalman, imm, fixed_lag, lstm, hybrid)'),
        DeclareLaunchArgument(
            'scenario', default_value='dolly',
            description='simulated camera move: locked_off, pan, tilt, dolly, crane, orbit, '
                        'handheld, whip_pan, steadicam'),
        DeclareLaunchArgument(
            'params_file',
            default_value=PathJoinSubstitution(
                [FindPackageShare('camstab_ros'), 'config', 'params.yaml']),
            description='YAML parameters of both nodes (keyed by node name)'),
        DeclareLaunchArgument(
            'use_rviz', default_value='true',
            description='start RViz with config/demo.rviz (truth, noisy, stabilised)'),
        Node(
            package='camstab_ros', executable='jitter_simulator', name='jitter_simulator',
            parameters=[params_file, {'scenario': LaunchConfiguration('scenario')}],
            remappings=[('pose_truth', '/camera/pose_truth'),
                        ('pose_noisy', '/camera/pose_noisy'),
                        ('path_truth', '/camera/path_truth'),
                        ('path_noisy', '/camera/path_noisy')],
            output='screen'),
        Node(
            package='camstab_ros', executable='stabilizer', name='camera_stabilizer',
            parameters=[params_file, {'method': LaunchConfiguration('method')}],
            remappings=[('pose_in', '/camera/pose_noisy'),
                        ('pose_out', '/camera/pose_stabilized'),
                        ('pose_out_cov', '/camera/pose_stabilized_cov'),
                        ('path_out', '/camera/path_stabilized')],
            output='screen'),
        Node(
            package='rviz2', executable='rviz2', name='rviz2',
            arguments=['-d', PathJoinSubstitution(
                [FindPackageShare('camstab_ros'), 'config', 'demo.rviz'])],
            condition=IfCondition(LaunchConfiguration('use_rviz')),
            output='screen'),
    ])

"""Formats and transports, no ROS: trajectories, rosbag2, FreeD, Mo-Sys F4."""  # noqa: A005

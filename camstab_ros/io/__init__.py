"""Formats and transports, free of ROS: trajectories, rosbag2, FreeD, Mo-Sys F4."""  # noqa: A005, E501

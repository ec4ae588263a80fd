"""
The pure core: poses, parameters, smoothers, the stabiliser, simulation, metrics.

Never imports rclpy or TensorFlow (test_structure checks it).
"""

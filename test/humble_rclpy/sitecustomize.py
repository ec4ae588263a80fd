"""
Make this process's rclpy look like ROS 2 Humble's (imported at start-up via PYTHONPATH).

Hides what Humble's rclpy lacks (test_humble_api.HUMBLE_LACKS): the post/pre-set parameter
callbacks (added in Iron) and `create_timer(autostart=...)` (added in Jazzy).
"""
import functools
import os

if os.environ.get('CAMSTAB_HUMBLE_RCLPY') == '1':
    from rclpy.node import Node

    for name in ('add_post_set_parameters_callback', 'add_pre_set_parameters_callback',
                 'remove_post_set_parameters_callback', 'remove_pre_set_parameters_callback'):
        if hasattr(Node, name):
            delattr(Node, name)
    jazzy_create_timer = Node.create_timer

    @functools.wraps(jazzy_create_timer)
    def create_timer(self, timer_period_sec, callback, callback_group=None, clock=None,
                     **jazzy_only):
        if jazzy_only:
            raise TypeError('create_timer() got an unexpected keyword argument '
                            f'{sorted(jazzy_only)[0]!r} (Humble)')
        return jazzy_create_timer(self, timer_period_sec, callback, callback_group, clock)

    Node.create_timer = create_timer

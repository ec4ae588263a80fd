"""
Fixtures for tests over real DDS: a private ROS_DOMAIN_ID per run and per test.

Domain ids are reserved with a lock file, so concurrent pytest runs (and xdist workers)
on this machine never share one; discovery is limited to this host. The session's id is
put in the environment at import, before any test initialises rclpy. At the end of the
session rclpy's default context is shut down, so that no spin thread outlives the
interpreter (that aborts the process with rc 134 after the tests passed).
"""
import fcntl
import os
from pathlib import Path
import random
import sys

import pytest


LOCK_DIR = Path('/tmp/camstab_ros_test_domains')
# 0 is everyone's default; ids above 101 can collide with ephemeral ports on Linux.
DOMAIN_IDS = range(1, 101)


class DomainLease:
    """An exclusive ROS_DOMAIN_ID among the processes using this file's locks."""

    def __init__(self):
        LOCK_DIR.mkdir(exist_ok=True)
        candidates = list(DOMAIN_IDS)
        random.SystemRandom().shuffle(candidates)
        for domain_id in candidates:
            handle = open(LOCK_DIR / f'{domain_id}.lock', 'w')
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            self.domain_id, self._handle = domain_id, handle
            return
        raise RuntimeError(f'all ROS domain ids {DOMAIN_IDS} are in use by other test runs')

    def env(self):
        """Return a copy of os.environ for child processes on this domain."""
        return dict(os.environ, ROS_DOMAIN_ID=str(self.domain_id),
                    ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST')

    def release(self):
        self._handle.close()


_SESSION_DOMAIN = DomainLease()
os.environ['ROS_DOMAIN_ID'] = str(_SESSION_DOMAIN.domain_id)
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'


@pytest.fixture(scope='session', autouse=True)
def _rclpy_shutdown_at_exit():
    yield
    rclpy = sys.modules.get('rclpy')
    if rclpy is not None:
        rclpy.try_shutdown()


@pytest.fixture
def ros_domain():
    """Yield a DomainLease of its own for one test (release at teardown)."""
    lease = DomainLease()
    yield lease
    lease.release()


@pytest.fixture
def ros_domain_env(ros_domain):
    """Environment for child processes on a private domain of this test."""
    return ros_domain.env()


@pytest.fixture(scope='module')
def module_ros_domain():
    """Yield a DomainLease shared by the tests of one module."""
    lease = DomainLease()
    yield lease
    lease.release()

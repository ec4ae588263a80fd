"""
Message <-> NumPy conversions for poses, paths, transforms and stamps (like sensor_msgs_py).

Positions are (3,) or (N, 3) arrays in metres, quaternions (4,) or (N, 4) in x, y, z, w
order, times float seconds. Covariances are 6x6 over (x, y, z, rotation about X, Y, Z),
the row-major layout of geometry_msgs/PoseWithCovariance. Stamps are copied as
(sec, nanosec) wherever an output keeps an input's stamp: a float of seconds since the
epoch cannot hold nanoseconds exactly.
"""
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Pose, PoseStamped, PoseWithCovarianceStamped, TransformStamped
from nav_msgs.msg import Path
import numpy as np


NS_PER_S = 1_000_000_000


def stamp_to_sec(stamp):
    """builtin_interfaces/Time -> float seconds."""
    return stamp.sec + stamp.nanosec * 1e-9


def stamp_to_ns(stamp):
    """builtin_interfaces/Time -> integer nanoseconds (exact)."""
    return stamp.sec * NS_PER_S + stamp.nanosec


def ns_to_stamp(ns):
    """Integer nanoseconds -> builtin_interfaces/Time."""
    sec, nanosec = divmod(int(ns), NS_PER_S)
    return Time(sec=sec, nanosec=nanosec)


def sec_to_stamp(t):
    """Float seconds -> builtin_interfaces/Time, rounded to the nearest nanosecond."""
    return ns_to_stamp(round(float(t) * NS_PER_S))


def copy_stamp(stamp):
    return Time(sec=stamp.sec, nanosec=stamp.nanosec)


def pose_to_arrays(pose):
    """geometry_msgs/Pose -> (position (3,), quaternion (4,))."""
    p, o = pose.position, pose.orientation
    return np.array([p.x, p.y, p.z]), np.array([o.x, o.y, o.z, o.w])


def arrays_to_pose(position, quaternion):
    """(position (3,), quaternion (4,)) -> geometry_msgs/Pose."""
    pose = Pose()
    pose.position.x, pose.position.y, pose.position.z = (float(v) for v in position)
    (pose.orientation.x, pose.orientation.y, pose.orientation.z,
     pose.orientation.w) = (float(v) for v in quaternion)
    return pose


def pose_stamped_to_arrays(msg):
    """geometry_msgs/PoseStamped -> (t seconds, position (3,), quaternion (4,))."""
    p, q = pose_to_arrays(msg.pose)
    return stamp_to_sec(msg.header.stamp), p, q


def make_pose_stamped(stamp, frame_id, position, quaternion):
    """Make a PoseStamped with the given stamp (builtin_interfaces/Time, copied) and frame."""
    msg = PoseStamped()
    msg.header.stamp = copy_stamp(stamp)
    msg.header.frame_id = frame_id
    msg.pose = arrays_to_pose(position, quaternion)
    return msg


def covariance_to_array(covariance):
    """Convert the 36-element row-major covariance of a message to a (6, 6) array."""
    return np.asarray(covariance, dtype=float).reshape(6, 6)


def make_pose_with_covariance_stamped(stamp, frame_id, position, quaternion, covariance):
    """PoseWithCovarianceStamped; covariance (6, 6) over x, y, z, rx, ry, rz."""
    covariance = np.asarray(covariance, dtype=float)
    if covariance.shape != (6, 6):
        raise ValueError(f'covariance must be 6x6, got shape {covariance.shape}')
    msg = PoseWithCovarianceStamped()
    msg.header.stamp = copy_stamp(stamp)
    msg.header.frame_id = frame_id
    msg.pose.pose = arrays_to_pose(position, quaternion)
    msg.pose.covariance = covariance.ravel().tolist()
    return msg


def pose_with_covariance_to_arrays(msg):
    """
    Convert a PoseWithCovarianceStamped to arrays.

    Returns (t, position (3,), quaternion (4,), covariance (6, 6)).
    """
    p, q = pose_to_arrays(msg.pose.pose)
    return stamp_to_sec(msg.header.stamp), p, q, covariance_to_array(msg.pose.covariance)


def make_transform_stamped(stamp, frame_id, child_frame_id, position, quaternion):
    """Make a TransformStamped placing child_frame_id at the pose in frame_id."""
    msg = TransformStamped()
    msg.header.stamp = copy_stamp(stamp)
    msg.header.frame_id = frame_id
    msg.child_frame_id = child_frame_id
    tr, rot = msg.transform.translation, msg.transform.rotation
    tr.x, tr.y, tr.z = (float(v) for v in position)
    rot.x, rot.y, rot.z, rot.w = (float(v) for v in quaternion)
    return msg


def transform_stamped_to_arrays(msg):
    """Convert a TransformStamped to (t, translation (3,), rotation quaternion (4,))."""
    tr, rot = msg.transform.translation, msg.transform.rotation
    return (stamp_to_sec(msg.header.stamp), np.array([tr.x, tr.y, tr.z]),
            np.array([rot.x, rot.y, rot.z, rot.w]))


def make_path(stamp, frame_id, poses):
    """nav_msgs/Path stamped `stamp` from a sequence of PoseStamped (kept, not copied)."""
    msg = Path()
    msg.header.stamp = copy_stamp(stamp)
    msg.header.frame_id = frame_id
    msg.poses = list(poses)
    return msg


def path_to_arrays(msg):
    """nav_msgs/Path -> (t (N,), positions (N, 3), quaternions (N, 4))."""
    rows = [pose_stamped_to_arrays(pose) for pose in msg.poses]
    if not rows:
        return np.zeros(0), np.zeros((0, 3)), np.zeros((0, 4))
    t, p, q = zip(*rows)
    return np.array(t), np.array(p), np.array(q)


def arrays_to_path(t, frame_id, positions, quaternions):
    """
    Arrays (t (N,), positions (N, 3), quaternions (N, 4)) -> nav_msgs/Path.

    The path's own stamp is that of its last pose (zero for an empty path).
    """
    poses = [make_pose_stamped(sec_to_stamp(ti), frame_id, p, q)
             for ti, p, q in zip(t, positions, quaternions)]
    stamp = poses[-1].header.stamp if poses else Time()
    return make_path(stamp, frame_id, poses)

"""
Unit quaternions (x, y, z, w) and rotation vectors, vectorised over leading axes.

Rotations go through scipy.spatial.transform.Rotation where it fits; hemisphere handling
and slerp between arrays of quaternion pairs are done here because Rotation has no
per-pair slerp.
"""
import math

import numpy as np
from scipy.spatial.transform import Rotation


IDENTITY = np.array([0.0, 0.0, 0.0, 1.0])


def normalize(q):
    """Return q scaled to unit length; raises ValueError on a zero or non-finite quaternion."""
    q = np.asarray(q, dtype=float)
    norm = np.linalg.norm(q, axis=-1, keepdims=True)
    if not np.all(np.isfinite(norm)) or np.any(norm < 1e-9):
        raise ValueError('zero-length or non-finite quaternion')
    return q / norm


def align_hemisphere(q, reference):
    """Return q or -q, whichever is closer to reference (same rotation, continuous sign)."""
    q = np.asarray(q, dtype=float)
    sign = np.where(np.sum(q * reference, axis=-1, keepdims=True) < 0.0, -1.0, 1.0)
    return q * sign


def make_continuous(q):
    """Flip signs along a sequence (N, 4) so consecutive quaternions share a hemisphere."""
    q = np.array(q, dtype=float)
    if len(q) < 2:
        return q
    flips = np.sum(q[1:] * q[:-1], axis=-1) < 0.0
    sign = np.concatenate([[1.0], np.where(np.cumsum(flips) % 2 == 1, -1.0, 1.0)])
    return q * sign[:, None]


def multiply(a, b):
    """Hamilton product a * b of (..., 4) quaternions in (x, y, z, w) order."""
    ax, ay, az, aw = np.moveaxis(np.asarray(a, dtype=float), -1, 0)
    bx, by, bz, bw = np.moveaxis(np.asarray(b, dtype=float), -1, 0)
    return np.stack([
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
        aw * bw - ax * bx - ay * by - az * bz,
    ], axis=-1)


def conjugate(q):
    q = np.array(q, dtype=float)
    q[..., :3] *= -1.0
    return q


def log_map(q):
    """Rotation vector (axis * angle, radians) of unit quaternions, shape (..., 3)."""
    q = np.asarray(q, dtype=float)
    return Rotation.from_quat(q.reshape(-1, 4)).as_rotvec().reshape(q.shape[:-1] + (3,))


def exp_map(v):
    """Return the unit quaternions of rotation vectors (..., 3)."""
    v = np.asarray(v, dtype=float)
    return Rotation.from_rotvec(v.reshape(-1, 3)).as_quat().reshape(v.shape[:-1] + (4,))


def slerp(a, b, fraction):
    """Spherical interpolation from a to b (broadcast over leading axes), shortest path."""
    a = np.asarray(a, dtype=float)
    b = align_hemisphere(b, a)
    delta = log_map(multiply(conjugate(a), b))
    return multiply(a, exp_map(delta * np.asarray(fraction, dtype=float)[..., None]))


def angle_between(a, b):
    """Geodesic angle in radians between rotations a and b (sign of q ignored)."""
    relative = multiply(conjugate(a), b)
    # atan2 keeps full precision for the tiny angles of tracker jitter, unlike arccos.
    return 2.0 * np.arctan2(np.linalg.norm(relative[..., :3], axis=-1), np.abs(relative[..., 3]))


# Single-pose helpers in plain floats for the per-pose hot paths: ~1 us per call here
# against ~10-25 us through the vectorised functions above (scipy Rotation objects and
# array stacking).
def log_relative(a, b):
    """Rotation vector (3 floats) of conj(a) * b for unit quaternions a, b (x, y, z, w)."""
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    x = aw * bx - ax * bw - ay * bz + az * by
    y = aw * by + ax * bz - ay * bw - az * bx
    z = aw * bz - ax * by + ay * bx - az * bw
    w = aw * bw + ax * bx + ay * by + az * bz
    if w < 0.0:
        x, y, z, w = -x, -y, -z, -w
    s = math.sqrt(x * x + y * y + z * z)
    k = 2.0 * math.atan2(s, w) / s if s > 0.0 else 2.0 / w
    return x * k, y * k, z * k


def compose_exp(a, v):
    """Return unit quaternion a * exp(v) (4 floats) for unit quaternion a, rotation vector v."""
    vx, vy, vz = v
    angle = math.sqrt(vx * vx + vy * vy + vz * vz)
    k = math.sin(0.5 * angle) / angle if angle > 0.0 else 0.5
    bx, by, bz, bw = vx * k, vy * k, vz * k, math.cos(0.5 * angle)
    ax, ay, az, aw = a
    x = aw * bx + ax * bw + ay * bz - az * by
    y = aw * by - ax * bz + ay * bw + az * bx
    z = aw * bz + ax * by - ay * bx + az * bw
    w = aw * bw - ax * bx - ay * by - az * bz
    norm = math.sqrt(x * x + y * y + z * z + w * w)
    return x / norm, y / norm, z / norm, w / norm

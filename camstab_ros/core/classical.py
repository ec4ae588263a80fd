"""
Simple causal smoothers: passthrough (baseline), exponential moving average, One Euro.

Defaults of `ema` and `one_euro` (but d_cutoff): training/tune_classical.py.

Orientation is smoothed on the sphere with slerp; every step uses the measurement
timestamps, so variable frame intervals are handled exactly.
"""
import math

from camstab_ros.core import quaternion as quat
from camstab_ros.core.params import ParamSpec
from camstab_ros.core.smoother import Estimate, Smoother
import numpy as np


class Passthrough(Smoother):
    name = 'passthrough'
    description = 'no smoothing (baseline)'

    def _reset(self):
        pass

    def _update(self, t, position, quaternion):
        return Estimate(t, position.copy(), quaternion)


class ExponentialMovingAverage(Smoother):
    name = 'ema'
    description = 'exponential moving average, slerp for orientation'
    PARAMS = {
        'time_constant_s': ParamSpec(0.0245, 'position time constant', 's', 0.0, 10.0),
        'rot_time_constant_s': ParamSpec(0.0243, 'orientation time constant', 's', 0.0, 10.0),
    }

    def _reset(self):
        self._t = None
        self._p = None
        self._q = None

    def _update(self, t, position, quaternion):
        if self._t is None:
            self._p, self._q = position.copy(), quaternion
        else:
            dt = t - self._t
            a_pos = _ema_alpha(dt, self.params['time_constant_s'])
            a_rot = _ema_alpha(dt, self.params['rot_time_constant_s'])
            self._p = self._p + a_pos * (position - self._p)
            self._q = _slerp(self._q, quaternion, a_rot)
        self._t = t
        return Estimate(t, self._p.copy(), self._q)


def _slerp(a, b, fraction):
    """Single-pose slerp from a towards b with the float helpers (the per-pose path)."""
    step = quat.log_relative(a, b)
    return np.array(quat.compose_exp(a, [v * fraction for v in step]))


def _ema_alpha(dt, time_constant):
    return 1.0 if time_constant <= 0.0 else 1.0 - math.exp(-dt / time_constant)


def _one_euro_alpha(dt, cutoff_hz):
    tau = 1.0 / (2.0 * math.pi * cutoff_hz)
    return 1.0 / (1.0 + tau / dt)


class OneEuro(Smoother):
    """
    One Euro filter (Casiez, Roussel, Vogel, CHI 2012): the cutoff rises with speed.

    Position uses the velocity vector (one cutoff for x, y, z); orientation uses the angular
    velocity vector (in the frame of the filtered orientation) and slerps towards the
    measurement. As in the authors' C++ reference (which this
    matches within 1e-4), the speed is measured from the previous filtered value.
    """

    name = 'one_euro'
    description = 'One Euro filter (speed-adaptive cutoff), slerp for orientation'
    PARAMS = {
        'min_cutoff': ParamSpec(0.0393, 'position cutoff frequency at rest', 'Hz',
                                1e-3, 1000.0),
        'beta': ParamSpec(471.6, 'position cutoff increase per unit speed', 'Hz per m/s',
                          0.0, 1e6),
        'rot_min_cutoff': ParamSpec(1.383, 'orientation cutoff frequency at rest', 'Hz',
                                    1e-3, 1000.0),
        'rot_beta': ParamSpec(330.5, 'orientation cutoff increase per unit angular speed',
                              'Hz per rad/s', 0.0, 1e6),
        'd_cutoff': ParamSpec(1.0, 'cutoff frequency of the speed estimate', 'Hz',
                              1e-3, 1000.0),
    }

    def _reset(self):
        self._t = None
        self._p = self._q = None
        self._dp = np.zeros(3)
        self._dw = np.zeros(3)

    def _update(self, t, position, quaternion):
        if self._t is None:
            self._p, self._q = position.copy(), quaternion
            self._t = t
            return Estimate(t, self._p.copy(), self._q)
        prm = self.params
        dt = t - self._t
        a_d = _one_euro_alpha(dt, prm['d_cutoff'])
        self._dp = self._dp + a_d * ((position - self._p) / dt - self._dp)
        cutoff = prm['min_cutoff'] + prm['beta'] * float(np.linalg.norm(self._dp))
        self._p = self._p + _one_euro_alpha(dt, cutoff) * (position - self._p)

        step = np.array(quat.log_relative(self._q, quaternion))
        self._dw = self._dw + a_d * (step / dt - self._dw)
        rot_cutoff = prm['rot_min_cutoff'] + prm['rot_beta'] * float(np.linalg.norm(self._dw))
        self._q = np.array(quat.compose_exp(self._q, step * _one_euro_alpha(dt, rot_cutoff)))

        self._t = t
        return Estimate(t, self._p.copy(), self._q)

"""
Simple causal smoothers: passthrough (baseline), exponential moving average, One Euro.

Defaults of `ema` and `one_euro` (but d_cutoff): training/tune_classical.py, for the
reference tracker (noise_meter.REFERENCE_NOISE). With `noise_scaling` 'auto' (default)
they follow the tracker's noise measured online: a time constant grows, a cutoff falls
as (noise / reference)^(2/3), the optimum of a first-order filter trading noise against
lag; One Euro's beta (cutoff per unit speed) falls as noise / reference, so speed counts
in units of the noise. Until the meter has a reading (the first ten measurements) the
measurements pass through. 'off' is the fixed filter as published.

Orientation is smoothed on the sphere with slerp; every step uses the measurement
timestamps, so variable frame intervals are handled exactly.
"""
import math

from camstab_ros.core import quaternion as quat
from camstab_ros.core.noise_meter import NOISE_SCALING, NoiseScale
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
        'time_constant_s': ParamSpec(0.002007, 'position time constant (for the reference '
                                     'tracker noise when noise_scaling is auto)', 's',
                                     0.0, 10.0),
        'rot_time_constant_s': ParamSpec(0.001237, 'orientation time constant (likewise)', 's',
                                         0.0, 10.0),
        'noise_scaling': ParamSpec('auto', 'auto: the time constants scale with the '
                                   "tracker's noise measured online; off: fixed",
                                   choices=NOISE_SCALING),
    }

    def _reset(self):
        self._t = None
        self._p = None
        self._q = None
        self._scale = (NoiseScale(self.noise_meter) if self.params['noise_scaling'] == 'auto'
                       else None)

    def _update(self, t, position, quaternion):
        if self._scale is not None:
            self._scale.update(t, position, quaternion)
        if self._t is None:
            ratios = None
        elif self._scale is None:
            ratios = (1.0, 1.0)
        else:  # the speeds: this measurement's step from the filtered pose
            dt = t - self._t
            ratios = self._scale.ratios(
                dt, float(np.linalg.norm(position - self._p)) / dt,
                math.sqrt(sum(v * v for v in quat.log_relative(self._q, quaternion))) / dt)
        if ratios is None:
            self._p, self._q = position.copy(), quaternion
        else:
            dt = t - self._t
            a_pos = _ema_alpha(dt, self.params['time_constant_s'] * ratios[0] ** CUTOFF_POWER)
            a_rot = _ema_alpha(dt, self.params['rot_time_constant_s']
                               * ratios[1] ** CUTOFF_POWER)
            self._p = self._p + a_pos * (position - self._p)
            self._q = _slerp(self._q, quaternion, a_rot)
        self._t = t
        return Estimate(t, self._p.copy(), self._q)


# Exponent of the noise ratio in a time constant (and, inverted, in a cutoff).
CUTOFF_POWER = 2.0 / 3.0


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
        'min_cutoff': ParamSpec(0.008773, 'position cutoff frequency at rest (for the '
                                'reference tracker noise when noise_scaling is auto)', 'Hz',
                                1e-3, 1000.0),
        'beta': ParamSpec(2159.0, 'position cutoff increase per unit speed', 'Hz per m/s',
                          0.0, 1e6),
        'rot_min_cutoff': ParamSpec(0.2778, 'orientation cutoff frequency at rest', 'Hz',
                                    1e-3, 1000.0),
        'rot_beta': ParamSpec(4535.0, 'orientation cutoff increase per unit angular speed',
                              'Hz per rad/s', 0.0, 1e6),
        'd_cutoff': ParamSpec(1.0, 'cutoff frequency of the speed estimate', 'Hz',
                              1e-3, 1000.0),
        'noise_scaling': ParamSpec('auto', 'auto: min_cutoff and beta (set for the '
                                   "reference tracker noise) scale with the tracker's noise "
                                   'measured online; off: fixed, as published',
                                   choices=NOISE_SCALING),
    }

    def _reset(self):
        self._t = None
        self._p = self._q = None
        self._dp = np.zeros(3)
        self._dw = np.zeros(3)
        self._scale = (NoiseScale(self.noise_meter) if self.params['noise_scaling'] == 'auto'
                       else None)

    def _update(self, t, position, quaternion):
        if self._scale is not None:
            self._scale.update(t, position, quaternion)
        if self._t is None:
            self._p, self._q = position.copy(), quaternion
            self._t = t
            return Estimate(t, self._p.copy(), self._q)
        prm = self.params
        dt = t - self._t
        a_d = _one_euro_alpha(dt, prm['d_cutoff'])
        self._dp = self._dp + a_d * ((position - self._p) / dt - self._dp)
        step = np.array(quat.log_relative(self._q, quaternion))
        self._dw = self._dw + a_d * (step / dt - self._dw)
        self._t = t
        ratios = (1.0, 1.0) if self._scale is None else self._scale.ratios(
            dt, float(np.linalg.norm(self._dp)), float(np.linalg.norm(self._dw)))
        if ratios is None:
            self._p, self._q = position.copy(), quaternion
            return Estimate(t, self._p.copy(), self._q)
        ratio_p, ratio_r = ratios
        cutoff = (prm['min_cutoff'] / ratio_p ** CUTOFF_POWER
                  + prm['beta'] / ratio_p * float(np.linalg.norm(self._dp)))
        self._p = self._p + _one_euro_alpha(dt, cutoff) * (position - self._p)
        rot_cutoff = (prm['rot_min_cutoff'] / ratio_r ** CUTOFF_POWER
                      + prm['rot_beta'] / ratio_r * float(np.linalg.norm(self._dw)))
        self._q = np.array(quat.compose_exp(self._q, step * _one_euro_alpha(dt, rot_cutoff)))
        return Estimate(t, self._p.copy(), self._q)

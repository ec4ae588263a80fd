"""
Training data for the learned smoothers: real and simulated motion under random trackers.

A take is fixed by its seed. The seed picks the motion: a simulated scenario (TRAIN or
VALIDATION seeds of training/splits.py) or, for REAL_SHARE of the takes, a stretch of
real recorded motion: splits.REAL_TRAIN_TAKES for training, REAL_VALIDATION_TAKES for
validation (never a test take).
It is augmented: played slower or faster (SPEED_RANGE), resampled to a frame rate drawn
log-uniformly from RATES_HZ, and half the takes turn the tracked body by a random fixed
rotation (trackers differ in body-axis conventions; the features are in the body frame,
so this teaches motion along every axis; a rotation or shift of the whole take changes
no feature). Then a random tracker reports it (`random_tracker`): 0.02-5 mm / 0.001-0.2
deg in total, white or partly to mostly coloured (AR(1) wandering over 0.1-1 s), with
spikes, dropouts, stamp jitter, drift and FreeD quantisation in some takes.

Each take becomes the features of the runtime (camstab_ros.core.learned_features, run
through the model's Kalman stage), for `hybrid` followed by what its own filter's
recursion reads (RECURSION_COLUMNS), and what the loss needs: the measurement's error in
the body frame and, for `lstm`, where the Kalman estimate lies and the measured sigmas,
and last whether the true camera is still (metrics.still_steps) over the step into a frame.
"""
from concurrent.futures import ProcessPoolExecutor
import math

from camstab_ros.core import learned_features as lf
from camstab_ros.core import quaternion as quat
from camstab_ros.core.metrics import still_steps
from camstab_ros.core.simulation import (add_tracker_noise, NOISE_PRESETS, SCENARIOS, simulate,
                                         TrackerNoise)
import numpy as np
from scipy.spatial.transform import Rotation
from training.matrix import real_pieces


RATES_HZ = (24.0, 240.0)
SECONDS = 20.0
SPEED_RANGE = (0.6, 1.8)
REAL_SHARE = 0.4
# Total tracker noise per axis (m); rotation (deg) is position x 40 x [0.5, 2].
NOISE_RANGE_M = (2e-5, 5e-3)
# Windows of a take the network is trained on; the first BURN_IN frames of a window that
# does not start the take only warm up the LSTM state (no loss).
WINDOW_FRAMES = 256
BURN_IN_FRAMES = 48
# What the hybrid's recursion reads per frame after the Kalman features: the predicted
# minus measured step (6), the Kalman innovation (6), the measurement's quaternion (4),
# the measured sigmas (2), and per group whether the Kalman filter passed the measurement
# through (2) or restarted (2, passed included): learned_features.hybrid_motion and
# hybrid_step.
RECURSION_COLUMNS = 22


def random_tracker(rng):
    """Return a random TrackerNoise over the range of DESIGN.md's trackers and beyond."""
    total_m = math.exp(rng.uniform(*np.log(NOISE_RANGE_M)))
    total_deg = total_m * 40.0 * math.exp(rng.uniform(math.log(0.5), math.log(2.0)))
    coloured = 0.0 if rng.random() < 0.35 else rng.uniform(0.2, 0.95)
    white = math.sqrt(1.0 - coloured ** 2)
    drift = rng.random() < 0.2
    return TrackerNoise(
        pos_sigma_m=total_m * white, rot_sigma_deg=total_deg * white,
        coloured_pos_m=total_m * coloured, coloured_rot_deg=total_deg * coloured,
        coloured_time_s=math.exp(rng.uniform(math.log(0.1), math.log(1.0))),
        drift_pos_m=rng.uniform(0.0, 0.3) * total_m if drift else 0.0,
        drift_rot_deg=rng.uniform(0.0, 0.3) * total_deg if drift else 0.0,
        spike_rate_hz=rng.uniform(0.05, 1.0) if rng.random() < 0.3 else 0.0,
        spike_m=rng.uniform(0.005, 0.05), spike_deg=rng.uniform(0.2, 2.0),
        dropout_rate=rng.uniform(0.0, 0.03) if rng.random() < 0.25 else 0.0,
        stamp_jitter_s=rng.uniform(0.0, 1.5e-3) if rng.random() < 0.3 else 0.0,
        freed_quantize=bool(rng.random() < 0.2))


_REAL_CACHE = {}


def _real_motion(rate_hz, takes):
    """Return the pieces of these real takes resampled to rate_hz (cached)."""
    if (rate_hz, takes) not in _REAL_CACHE:
        _REAL_CACHE[rate_hz, takes] = list(real_pieces(rate_hz, takes))
    return _REAL_CACHE[rate_hz, takes]


def make_take(seed, real_takes):
    """
    Return the noisy take (simulation.Take) of a seed: motion, augmentation and tracker.

    real_takes: the real recorded takes (splits) the seed may draw its motion from; with
    none, the motion is always simulated.
    """
    rng = np.random.default_rng([seed, 20261201])
    rate = math.exp(rng.uniform(*np.log(RATES_HZ)))
    speed = math.exp(rng.uniform(*np.log(SPEED_RANGE)))
    # The motion is sampled at rate / speed and played `speed` times faster: the tracker
    # reports it at `rate`, to the rounding of the source rate to a whole multiple of 4 Hz
    # (the real motion is resampled once per source rate; 22-241 Hz in all).
    source_rate = float(4 * max(round(rate / speed / 4), 1))
    pieces = (_real_motion(source_rate, tuple(real_takes))
              if real_takes and rng.random() < REAL_SHARE else [])
    if pieces:
        _, t, p, q = pieces[rng.integers(len(pieces))]
        frames = int(SECONDS * speed * source_rate)
        start = rng.integers(max(len(t) - frames, 0) + 1)
        t, p, q = t[start:start + frames], p[start:start + frames], q[start:start + frames]
        t = (t - t[0]) / speed
    else:
        scenario = SCENARIOS[rng.integers(len(SCENARIOS))]
        sim = simulate(scenario, SECONDS * speed, source_rate, seed,
                       NOISE_PRESETS['none'])
        t, p, q = sim.t / speed, sim.truth_p, sim.truth_q
    if rng.random() < 0.5:
        q = quat.multiply(q, Rotation.random(random_state=rng).as_quat())
    return add_tracker_noise(t, p, q, random_tracker(rng), seed)


def take_arrays(method, take, kalman_params):
    """
    Return (inputs (N, F), loss arrays (N, L)) of a noisy take.

    hybrid: inputs = the Kalman features and RECURSION_COLUMNS, loss = the measurement's
    error (6); lstm: inputs = its features, loss = the error, the Kalman estimate's offset
    (learned_features.towards_kalman, 6) and the sigmas per axis (6). The last loss column
    of both is 1 where the true camera is still over the step into the frame, else 0.
    """
    p, q = take.noisy_p, quat.make_continuous(quat.normalize(take.noisy_q))
    record = lf.kalman_pass(kalman_params, take.t, p, q)
    error = lf.measurement_error(p, q, take.truth_p, take.truth_q)
    still = np.concatenate([[0.0], still_steps(take.t, take.truth_p, take.truth_q)])[:, None]
    if method == 'hybrid':
        return np.hstack([lf.hybrid_features(record), lf.hybrid_motion(p, q, record),
                          record.innovation.reshape(-1, 6), q, record.sigma, record.passed,
                          record.restarted]), np.hstack([error, still])
    features = lf.lstm_features(take.t, p, q, record)
    # Started frames are not moved at run time: a zero sigma there says so.
    sigma = np.repeat(record.sigma, 3, axis=1) * (features[:, -1:] == 0.0)
    towards = lf.towards_kalman(p, q, record.position, record.output_q)
    return features, np.hstack([error, towards, sigma, still])


def _seed_arrays(args):
    method, seed, real_takes, kalman_params = args
    return take_arrays(method, make_take(seed, real_takes), kalman_params)


def windows(features, loss):
    """Cut one take into windows: (x (W, T, F), loss arrays (W, T, C), weight (W, T))."""
    xs, ys, ws = [], [], []
    for start in range(0, len(features) - WINDOW_FRAMES + 1, WINDOW_FRAMES):
        xs.append(features[start:start + WINDOW_FRAMES])
        ys.append(loss[start:start + WINDOW_FRAMES])
        weight = np.ones(WINDOW_FRAMES)
        if start:
            weight[:BURN_IN_FRAMES] = 0.0
        ws.append(weight)
    return xs, ys, ws


def build(method, seeds, kalman_params, real_takes, workers=2):
    """
    Build the windows of the takes with these seeds (real motion from real_takes).

    Return x (W, T, F), loss arrays (W, T, C), weight (W, T) and the number of poses.
    """
    jobs = [(method, int(seed), real_takes, kalman_params) for seed in seeds]
    xs, ys, ws = [], [], []
    poses = 0
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for features, loss in pool.map(_seed_arrays, jobs, chunksize=4):
            poses += len(features)
            x, y, w = windows(features, loss)
            xs += x
            ys += y
            ws += w
    return np.array(xs), np.array(ys), np.array(ws), poses


def normalisation(x, weight, method):
    """
    Return the feature (mean, std) of training windows.

    Robust: half the 16-84 percentile range (outliers in the stream do not inflate it);
    zero mean for the sign-symmetric quantities; the restart flag is left as is. Only the
    features are normalised, not the hybrid's recursion inputs after them.
    """
    used = weight.reshape(-1) > 0
    names = [name for name, _ in lf.FEATURES[method]]
    f = x.reshape(-1, x.shape[-1])[used][:, :len(names)]
    low, high = np.percentile(f, [16, 84], axis=0)
    std = np.maximum((high - low) / 2.0, 1e-3)
    mean = np.zeros(f.shape[1])
    for k, name in enumerate(names):
        if name.startswith('gain') or name == 'log2_interval':
            mean[k] = np.median(f[:, k])
        elif name == 'restarted':
            mean[k], std[k] = 0.0, 1.0
    return mean, std

"""
Training data for the learned smoothers, generated on demand from the simulation library.

A take is fixed by its seed: the seed picks the scenario, the frame rate (24-240 Hz) and a
tracker error model between quiet optical tracking and noisy inside-out tracking, with
outliers, dropouts, stamp jitter, drift and FreeD quantisation in some takes
(re-localisation jumps are left out: an offset the tracker reports persistently cannot be
learned from the stream). Half of the takes turn the tracked body by a random fixed
rotation (trackers differ in body-axis conventions, e.g. optical z-forward frames): the
features are in the body frame, so this teaches the network motion along every axis.
Half of the takes are also played faster (see MAX_SPEED_UP).
Features and targets are those of the runtime
(camstab_ros.core.learned_features), so training and inference cannot drift apart. Seeds come from
training/splits.py; the test split is only used by evaluate.py.
"""
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
import math

from camstab_ros.core import learned_features
from camstab_ros.core import quaternion as quat
from camstab_ros.core.simulation import SCENARIOS, simulate, TrackerNoise
import numpy as np
from scipy.spatial.transform import Rotation


RATES_HZ = (24.0, 25.0, 30.0, 48.0, 50.0, 60.0, 100.0, 120.0, 240.0)
FRAMES_PER_TAKE = 2400
MIN_SECONDS, MAX_SECONDS = 10.0, 40.0
# Windows of a take the network is trained on; the first BURN_IN frames of a window that
# does not start the take only warm up the LSTM state (no loss).
WINDOW_FRAMES = 256
BURN_IN_FRAMES = 48
# Half of the takes play the scenario's motion up to this many times faster (simulated at
# rate / speed and re-stamped): quicker, livelier moves than the scenarios' own.
MAX_SPEED_UP = 3.0
# Body rotations and speed-ups on (the shipped hybrid) or off (the shipped lstm: with them
# its state stopped forgetting; see README). Off draws the same takes minus both.
AUGMENT = True


def take_config(seed):
    """
    Return the configuration of the training take with this seed.

    The configuration is (scenario, rate_hz, seconds, TrackerNoise, body rotation
    quaternion or None, speed-up factor).
    """
    rng = np.random.default_rng([seed, 20240601])
    scenario = SCENARIOS[rng.integers(len(SCENARIOS))]
    rate = float(rng.choice(RATES_HZ))
    seconds = float(np.clip(FRAMES_PER_TAKE / rate, MIN_SECONDS, MAX_SECONDS))
    pos_sigma_m = math.exp(rng.uniform(math.log(1e-4), math.log(2e-3)))
    rot_sigma_deg = pos_sigma_m * 40.0 * math.exp(rng.uniform(math.log(0.5), math.log(2.0)))
    drift = rng.random() < 0.3
    noise = TrackerNoise(
        pos_sigma_m=pos_sigma_m,
        rot_sigma_deg=rot_sigma_deg,
        drift_pos_m=rng.uniform(0.0, 3e-4) if drift else 0.0,
        drift_rot_deg=rng.uniform(0.0, 3e-3) if drift else 0.0,
        spike_rate_hz=rng.uniform(0.1, 1.0) if rng.random() < 0.3 else 0.0,
        dropout_rate=rng.uniform(0.0, 0.03) if rng.random() < 0.25 else 0.0,
        stamp_jitter_s=rng.uniform(0.0, 2e-3) if rng.random() < 0.3 else 0.0,
        freed_quantize=bool(rng.random() < 0.2))
    mount = Rotation.random(random_state=rng).as_quat() if rng.random() < 0.5 else None
    speed = math.exp(rng.uniform(0.0, math.log(MAX_SPEED_UP))) if rng.random() < 0.5 else 1.0
    return scenario, rate, seconds, noise, mount, speed


def simulate_take(seed):
    """Simulate the training-style take of a seed (see take_config)."""
    scenario, rate, seconds, noise, mount, speed = take_config(seed)
    if not AUGMENT:
        return simulate(scenario, seconds=seconds, rate_hz=rate, seed=seed, noise=noise)
    take = simulate(scenario, seconds=seconds * speed, rate_hz=rate / speed, seed=seed,
                    noise=noise)
    if speed != 1.0:
        take = replace(take, t=take.t / speed, rate_hz=rate)
    if mount is not None:
        take = replace(take, truth_q=quat.multiply(take.truth_q, mount),
                       noisy_q=quat.multiply(take.noisy_q, mount))
    return take


def take_arrays(method, take, kalman_params=None):
    """(features (N, F), targets (N, 6)) of a simulated take for `method`."""
    if method == 'hybrid':
        est_p, est_v, est_q, rate, dt, restarted = learned_features.kalman_pass(
            kalman_params, take.t, take.noisy_p, take.noisy_q)
        features = learned_features.hybrid_features(take.noisy_p, take.noisy_q, est_p, est_v,
                                                    est_q, rate, dt, restarted)
        targets = learned_features.hybrid_targets(take.truth_p, take.truth_q, est_p, est_q)
    else:
        features = learned_features.lstm_features(take.t, take.noisy_p, take.noisy_q)
        targets = learned_features.lstm_targets(take.truth_p, take.truth_q, take.noisy_p,
                                                take.noisy_q)
    return features, targets


def _seed_arrays(args):
    method, seed, kalman_params = args
    return take_arrays(method, simulate_take(seed), kalman_params)


def windows(features, targets):
    """Cut one take into windows: (x (W, T, F), y (W, T, 6), weight (W, T))."""
    xs, ys, ws = [], [], []
    for start in range(0, len(features) - WINDOW_FRAMES + 1, WINDOW_FRAMES):
        xs.append(features[start:start + WINDOW_FRAMES])
        ys.append(targets[start:start + WINDOW_FRAMES])
        weight = np.ones(WINDOW_FRAMES)
        if start:
            weight[:BURN_IN_FRAMES] = 0.0
        ws.append(weight)
    return xs, ys, ws


def build(method, seeds, kalman_params=None, workers=2, progress=None):
    """
    Build the windows of the takes with these seeds.

    Return x (W, T, F), y (W, T, 6), weight (W, T) and the number of poses simulated.
    """
    jobs = [(method, int(seed), kalman_params) for seed in seeds]
    xs, ys, ws = [], [], []
    poses = 0
    with ProcessPoolExecutor(max_workers=workers) as pool:
        results = pool.map(_seed_arrays, jobs, chunksize=4)
        for features, targets in (progress(results, total=len(jobs)) if progress
                                  else results):
            poses += len(features)
            x, y, w = windows(features, targets)
            xs += x
            ys += y
            ws += w
    return np.array(xs), np.array(ys), np.array(ws), poses


def normalisation(x, y, weight):
    """
    Feature (mean, std) and per-group target scales from training windows.

    Robust: half the 16-84 percentile range (outliers in the stream do not inflate it);
    zero mean for the sign-symmetric quantities (everything but dt and the restart
    flag, which is left as is). Targets share one scale per group (position, rotation).
    """
    used = weight.reshape(-1) > 0
    f = x.reshape(-1, x.shape[-1])[used]
    t = y.reshape(-1, y.shape[-1])[used]
    low, high = np.percentile(f, [16, 84], axis=0)
    std = np.maximum((high - low) / 2.0, 1e-6)
    mean = np.zeros(f.shape[1])
    if f.shape[1] == len(learned_features.HYBRID_FEATURES):
        mean[12] = np.median(f[:, 12])
        mean[13], std[13] = 0.0, 1.0
    else:
        mean[6] = np.median(f[:, 6])
    low, high = np.percentile(t, [16, 84], axis=0)
    half = (high - low) / 2.0
    scale = np.repeat([np.mean(half[:3]), np.mean(half[3:])], 3)
    return mean, std, scale

"""Shared test helpers: paths and small synthetic takes."""
from pathlib import Path
import subprocess
import sys

import numpy as np
import pytest
from scipy.spatial.transform import Rotation


PROJECT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT.parent / 'shared' / 'data'


def shared_file(relative):
    """Return a file of ../shared/data, or skip the test when the shared data is absent."""
    path = SHARED_DATA / relative
    if not path.is_file():
        pytest.skip(f'shared data not available: {path}')
    return path


def moving_take(n=600, rate_hz=60.0, noise_m=0.0005, noise_deg=0.05, seed=0, jitter_dt=False):
    """
    Return a smooth 6-DoF move with seeded white noise.

    The move is the tuple (t, truth_p, truth_q, noisy_p, noisy_q).
    """
    rng = np.random.default_rng(seed)
    if jitter_dt:
        t = np.cumsum(1.0 / rng.uniform(24.0, 240.0, n))
    else:
        t = np.arange(n) / rate_hz
    truth_p = np.column_stack([0.5 * np.sin(0.7 * t), 0.3 * np.cos(0.4 * t), 1.5 + 0.1 * t])
    truth_r = Rotation.from_euler('zyx', np.column_stack([0.6 * np.sin(0.5 * t), 0.2 * t,
                                                          0.05 * np.cos(t)]))
    truth_q = truth_r.as_quat()
    noisy_p = truth_p + rng.normal(0.0, noise_m, truth_p.shape)
    wobble = Rotation.from_rotvec(rng.normal(0.0, np.radians(noise_deg), (n, 3)))
    noisy_q = (truth_r * wobble).as_quat()
    return t, truth_p, truth_q, noisy_p, noisy_q


def modules_loaded_by(code, roots):
    """Run code in a fresh interpreter; the loaded modules whose top package is in roots."""
    probe = (f'{code}\nimport sys\n'
             f'print(sorted(m for m in sys.modules if m.split(".")[0] in {tuple(roots)!r}))\n')
    result = subprocess.run([sys.executable, '-c', probe], cwd=PROJECT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def hybrid_with_output_bias(directory, bias=None):
    """Copy the shipped hybrid model to directory, its dense bias replaced (when given)."""
    import json
    import shutil
    from camstab_ros.core import lstm_model
    shutil.copytree(lstm_model.default_model_dir('hybrid'), directory)
    if bias is not None:
        weights = directory / 'weights.npz'
        with np.load(weights) as npz:
            arrays = dict(npz)
        arrays['dense/bias'] = np.array(bias, dtype=np.float32)
        np.savez(weights, **arrays)
        card = json.loads((directory / lstm_model.CARD_FILE).read_text())
        card['weights']['sha256'] = lstm_model.sha256_of(weights)
        (directory / lstm_model.CARD_FILE).write_text(json.dumps(card))
    return directory

"""A tiny real tf-keras training run end to end: dataset -> fit -> export -> runtime."""
import json

from camstab_ros.core import learned_features, lstm_model
from camstab_ros.core.methods import make_smoother
from camstab_ros.core.simulation import simulate
import numpy as np
import pytest


pytest.importorskip('tf_keras')


@pytest.mark.parametrize('method', ('hybrid', 'lstm'))
def test_tiny_training_run_exports_a_model_the_runtime_loads_and_runs(method, tmp_path):
    from training import train
    out = tmp_path / method
    # 6 takes cut into 64-frame windows, batch 8: ~30 steps per epoch, 8 epochs.
    status = train.main(['--model', method, '--out', str(out), '--train-takes', '6',
                         '--val-takes', '2', '--units', '8', '--window', '64',
                         '--batch', '8', '--epochs', '8', '--patience', '8',
                         '--metric-seconds', '2'])
    assert status == 0
    card = json.loads((out / lstm_model.CARD_FILE).read_text())
    assert card['method'] == method and card['card_version'] == lstm_model.CARD_VERSION
    assert card['weights']['sha256'] == lstm_model.sha256_of(out / 'weights.npz')
    assert card['training']['epochs_run'] >= 1
    assert set(card['metrics']) >= {'validation', 'test'}
    assert (card['kalman'] is not None) == (method == 'hybrid')
    with np.load(out / 'weights.npz', allow_pickle=False) as npz:
        assert npz['lstm_0/recurrent_kernel'].shape == (8, 32)
    smoother = make_smoother(method, model_path=str(out))
    assert not smoother.fallback, smoother.model_status
    take = simulate('pan', seconds=3.0, rate_hz=60.0, seed=11)
    _, p, q = smoother.smooth(take.t, take.noisy_p, take.noisy_q)
    assert p.shape == take.noisy_p.shape and np.all(np.isfinite(p)) and np.all(np.isfinite(q))
    # The network does correct: the output differs from its uncorrected base.
    base = take.noisy_p if method == 'lstm' else learned_features.kalman_pass(
        lstm_model.kalman_params(smoother.model.card), take.t, take.noisy_p, take.noisy_q)[0]
    assert np.max(np.abs(p - base)) > 0.0

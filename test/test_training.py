"""A tiny real tf-keras training run end to end: dataset -> fit -> export -> runtime."""
import json

from camstab_ros.core import learned_features, lstm_model
from camstab_ros.core import quaternion as quat
from camstab_ros.core.methods import make_smoother
from camstab_ros.core.metrics import error_metrics
from camstab_ros.core.simulation import simulate, TrackerNoise
import numpy as np
import pytest
from training import dataset
from training.splits import REAL_TEST_TAKES, REAL_TRAIN_TAKES, REAL_VALIDATION_TAKES


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
    stage = lstm_model.kalman_params(card)
    scale = train.STAGE_PROCESS_SCALE[method]
    for name, value in train.STAGE_KALMAN.items():
        expected = value * scale if name in ('process_noise', 'rot_process_noise') else value
        assert stage[name] == pytest.approx(expected) if isinstance(value, float) else \
            stage[name] == expected, name
    assert card['training']['real_motion'] == {
        'train': list(REAL_TRAIN_TAKES), 'validation': list(REAL_VALIDATION_TAKES),
        'held_out': list(REAL_TEST_TAKES), 'share_of_takes': dataset.REAL_SHARE}
    with np.load(out / 'weights.npz', allow_pickle=False) as npz:
        assert npz['lstm_0/recurrent_kernel'].shape == (8, 32)
    smoother = make_smoother(method, model_path=str(out))
    assert not smoother.fallback, smoother.model_status
    take = simulate('pan', seconds=3.0, rate_hz=60.0, seed=11)
    _, p, q = smoother.smooth(take.t, take.noisy_p, take.noisy_q)
    assert p.shape == take.noisy_p.shape and np.all(np.isfinite(p)) and np.all(np.isfinite(q))
    # The network does act: the output differs from the raw measurement.
    assert np.max(np.abs(p - take.noisy_p)) > 0.0


def test_the_training_loss_sees_the_screen_error_of_the_metrics():
    # The loss's linearised screen energy is the metrics' screen_rmse_px, squared.
    from training import train
    take = simulate('handheld', seconds=6.0, rate_hz=60.0, seed=4,
                    noise=TrackerNoise(pos_sigma_m=0.002, rot_sigma_deg=0.05))
    features, error = dataset.take_arrays('hybrid', take, train.STAGE_KALMAN)
    m = train.screen_matrix()
    record = learned_features.kalman_pass(train.STAGE_KALMAN, take.t, take.noisy_p,
                                          take.noisy_q)
    z_q = quat.make_continuous(quat.normalize(take.noisy_q))
    kalman_error = error + learned_features.towards_kalman(take.noisy_p, z_q, record.position,
                                                           record.output_q)
    for estimate, (p, q) in ((error, (take.noisy_p, take.noisy_q)),
                             (kalman_error, (record.position, record.output_q))):
        linear = np.sqrt(np.mean(np.einsum('ti,ij,tj->t', estimate, m, estimate)))
        exact = error_metrics(take.t, p, q, take.truth_p, take.truth_q)['screen_rmse_px']
        assert linear == pytest.approx(exact, rel=0.01)
    assert features.shape == (len(take.t),
                              len(learned_features.HYBRID_FEATURES) + dataset.RECURSION_COLUMNS)


@pytest.mark.parametrize('method', ('hybrid', 'lstm'))
def test_a_model_that_passes_takes_through_at_run_time_is_flagged(method):
    # The shipped models' run-time figures (their cards) beat passthrough; the same figures
    # with passthrough's error in the model's place do not.
    from training import train
    card = lstm_model.load_model(lstm_model.default_model_dir(method), method).card
    metrics = card['metrics']['validation']
    assert train.acts_at_run_time(metrics, method)
    raw = metrics['passthrough']['screen_rmse_px']
    nearly_raw = {method: {'screen_rmse_px': raw * (1.0 - 0.5 * train.PASSTHROUGH_MARGIN)},
                  'passthrough': metrics['passthrough']}
    assert not train.acts_at_run_time(nearly_raw, method)

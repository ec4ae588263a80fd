"""A tiny real tf-keras training run end to end: dataset -> fit -> export -> runtime."""
import json

from camstab_ros.core import learned_features, lstm_model
from camstab_ros.core import quaternion as quat
from camstab_ros.core.methods import make_smoother
from camstab_ros.core.metrics import error_metrics, still_steps
from camstab_ros.core.simulation import simulate, TrackerNoise
from helpers import hybrid_with_output_bias
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
                         '--metric-seconds', '2', '--select-rates', '25'])
    assert status == 0
    card = json.loads((out / lstm_model.CARD_FILE).read_text())
    assert card['method'] == method and card['card_version'] == lstm_model.CARD_VERSION
    assert card['weights']['sha256'] == lstm_model.sha256_of(out / 'weights.npz')
    assert card['training']['epochs_run'] >= 1
    # Every epoch was judged on the validation matrix's 25 Hz cells; the best scored one kept.
    selection = card['training']['selection']
    epochs = selection['epochs']
    assert [e['epoch'] for e in epochs] == list(range(1, card['training']['epochs_run'] + 1))
    best = min(epochs, key=lambda e: e['score'])
    assert selection['epoch'] == best['epoch'] and '42 cells at 25 Hz' in selection['on']
    # The exported weights are that epoch's: judged again, the model scores what it scored.
    from training import matrix
    work = [c for c in matrix.cells('validation', []) if c[2] == 25.0]
    again = train.judge([('exported', out)], work, workers=2)['exported']
    assert train.selection_score(again) == pytest.approx(best['score'], abs=1e-4)
    if method == 'hybrid':
        # Fine-tuning starts from the exported model: judged as epoch 0, it scores the same.
        tuned = tmp_path / 'tuned'
        assert train.main(['--model', method, '--out', str(tuned), '--init', str(out),
                           '--train-takes', '6', '--val-takes', '2', '--units', '8',
                           '--window', '64', '--batch', '8', '--epochs', '1',
                           '--metric-seconds', '2', '--select-rates', '25']) == 0
        first = json.loads((tuned / lstm_model.CARD_FILE).read_text())
        judged = first['training']['selection']['epochs']
        assert [e['epoch'] for e in judged] == [0, 1] and judged[0]['val_loss'] is None
        assert judged[0]['score'] == pytest.approx(best['score'], abs=1e-4)
        assert first['features']['mean'] == card['features']['mean']
        start = first['training']['initialised_from']  # traceable to the run it started from
        assert start['weights_sha256'] == card['weights']['sha256']
        assert start['training']['selection'] == card['training']['selection']
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
    features, loss_arrays = dataset.take_arrays('hybrid', take, train.STAGE_KALMAN)
    error = loss_arrays[:, :6]
    assert np.count_nonzero(loss_arrays[:, 6]) == 0  # a hand is never still
    # The last loss column flags the steps into a frame where the true camera is still.
    pan = simulate('pan', seconds=6.0, rate_hz=60.0, seed=4)
    for method in ('hybrid', 'lstm'):
        flags = dataset.take_arrays(method, pan, train.STAGE_KALMAN)[1][:, -1]
        still = still_steps(pan.t, pan.truth_p, pan.truth_q)
        assert flags[0] == 0.0 and np.array_equal(flags[1:], still)
        assert 0 < np.count_nonzero(still) < len(still)
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


def test_the_still_term_of_the_loss_weighs_the_shake_of_holds_only():
    # One window: an estimate that removes the measurement's shake on its second half. With
    # those frames flagged still, the still term rewards it; with no still frame, the term
    # is zero and the loss is the loss without it.
    import tensorflow as tf
    from training import train
    rng = np.random.default_rng(3)
    frames = 64
    error = rng.normal(scale=1e-3, size=(1, frames, 6))
    steady = error.copy()
    steady[0, frames // 2:] = error[0, frames // 2]
    offset = steady - error  # the hybrid's output: the estimate's offset from the measurement
    flags = np.zeros((1, frames))
    flags[0, frames // 2 + 1:] = 1.0

    def loss(still_weight, still):
        y_true = np.concatenate([error, still[..., None], np.ones((1, frames, 1))], -1)
        value = train.make_loss(tf, 'hybrid', 0.5, still_weight=still_weight)(
            tf.constant(y_true, tf.float32), tf.constant(offset, tf.float32))
        return float(value)
    assert loss(1.0, np.zeros_like(flags)) == pytest.approx(loss(0.0, np.zeros_like(flags)))
    # On the flagged steps the estimate does not move: log(floor / raw energy), far below 0.
    assert loss(1.0, flags) < loss(0.0, flags) - 5.0
    assert loss(0.0, flags) == pytest.approx(loss(0.0, np.zeros_like(flags)))


def test_the_epoch_score_rewards_less_shake_on_holds():
    from training import train
    figures = {'geomean_screen': 0.9, 'worst_screen_rmse_px': 0.99,
               'worst_pos_rmse_mm': 0.99, 'worst_rot_rmse_deg': 0.99, 'geomean_still': 0.25}
    steadier = dict(figures, geomean_still=0.125)
    assert train.selection_score(steadier) == pytest.approx(
        train.selection_score(figures) - train.SELECTION_STILL_WEIGHT * np.log(2.0))
    # Cells without holds at >= 60 Hz (the tests' 25 Hz selection): no still term.
    assert train.selection_score(dict(figures, geomean_still=float('nan'))) == pytest.approx(
        np.log(0.9))


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


def test_epochs_are_scored_on_the_validation_matrix_for_quality_and_harm(tmp_path):
    # Three models judged on validation cells as training judges each epoch: the shipped
    # hybrid, the same network pushed to pass the measurement through (no gain), and pushed
    # to hold its own prediction (harm in moves). The shipped one scores best.
    from training import matrix, train

    def variant(name, bias):
        return name, hybrid_with_output_bias(tmp_path / name, bias)
    candidates = [variant('passthrough', [-30.0] * 4), variant('shipped', None),
                  variant('holding', [30.0, -30.0, 30.0, -30.0])]
    work = [cell for cell in matrix.cells('validation', [])
            if cell[2] == 60.0 and cell[1] == 'optical' and cell[0] in ('pan', 'locked_off',
                                                                        'whip_pan')]
    assert len(work) == 3
    figures = train.judge(candidates, work, workers=2)
    assert set(figures) == {'passthrough', 'shipped', 'holding'}  # no oracle rows: not needed
    assert figures['passthrough']['geomean_screen'] == pytest.approx(1.0, abs=1e-3)
    assert figures['shipped']['geomean_screen'] < 0.95
    assert figures['holding']['worst_screen_rmse_px'] > 1.0
    scores = {name: train.selection_score(f) for name, f in figures.items()}
    assert scores['shipped'] < scores['passthrough'] < scores['holding']


@pytest.mark.parametrize('argv', (
    ['--select-rates', '30'], ['--select-rates', 'fast'], ['--select', 'epoch'],
    ['--harm-linear-from', '0'], ['--still-weight', '-1'], ['--init', '/nonexistent'],
    ['--init', str(lstm_model.default_model_dir('hybrid')), '--units', '8'],
    ['--init', str(lstm_model.default_model_dir('hybrid')), '--stage-process-scale', '1']))
def test_bad_training_arguments_exit_2(argv, capsys):
    from training import train
    with pytest.raises(SystemExit) as exc:
        train.main(['--model', 'hybrid', *argv])
    assert exc.value.code == 2
    assert capsys.readouterr().err

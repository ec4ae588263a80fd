"""
Tests of the learned smoothers `lstm` and `hybrid`.

Covered: NumPy runtime against Keras, model loading and its failures, the bounds on what a
network can do (hybrid in the triangle of the measurement and two predictions, lstm
between the measurement and the Kalman estimate within its sigma cap),
non-finite outputs, invariance, smooth() vs update().
"""
import json
import logging
import shutil
import subprocess
import sys
import threading
import zipfile

from camstab_ros.core import learned_features, lstm_model
from camstab_ros.core import quaternion as quat
from camstab_ros.core.kalman import POS
from camstab_ros.core.methods import make_smoother
from camstab_ros.core.simulation import simulate, TrackerNoise
from camstab_ros.core.smoother import stack
from helpers import modules_loaded_by, PROJECT
import numpy as np
import pytest


METHODS = ('lstm', 'hybrid')


def _take(scenario='dolly', seconds=8.0, rate_hz=60.0, seed=3, noise=TrackerNoise()):
    return simulate(scenario, seconds=seconds, rate_hz=rate_hz, seed=seed, noise=noise)


def _streamed(smoother, t, p, q):
    return stack([smoother.update(*row) for row in zip(t, p, q)])


def _model_copy(tmp_path, method):
    target = tmp_path / method
    shutil.copytree(lstm_model.default_model_dir(method), target)
    return target


def _card(directory):
    return json.loads((directory / lstm_model.CARD_FILE).read_text())


def _write_card(directory, card):
    (directory / lstm_model.CARD_FILE).write_text(json.dumps(card))


def _kalman_stage(smoother, take):
    """Return the Kalman pass of a learned smoother's model card over a take."""
    return learned_features.kalman_pass(lstm_model.kalman_params(smoother.model.card), take.t,
                                        take.noisy_p, take.noisy_q)


@pytest.mark.parametrize('method', METHODS)
def test_shipped_model_loads_and_smooths(method):
    smoother = make_smoother(method)
    assert not smoother.fallback and smoother.model_status.startswith('ok')
    take = _take()
    _, p, q = smoother.smooth(take.t, take.noisy_p, take.noisy_q)
    assert p.shape == take.noisy_p.shape and np.all(np.isfinite(p))
    assert np.allclose(np.linalg.norm(q, axis=1), 1.0)


def test_runtime_never_imports_tensorflow():
    code = ('from camstab_ros.core.methods import make_smoother\n'
            'from camstab_ros.core.simulation import simulate\n'
            'take = simulate("pan", seconds=2.0, rate_hz=60.0, seed=1)\n'
            'for m in ("lstm", "hybrid"):\n'
            '    s = make_smoother(m)\n'
            '    assert not s.fallback, s.model_status\n'
            '    s.smooth(take.t, take.noisy_p, take.noisy_q)\n'
            '    s.update(take.t[0], take.noisy_p[0], take.noisy_q[0])\n')
    assert modules_loaded_by(code, ('tensorflow', 'tf_keras', 'keras')) == '[]'


@pytest.mark.parametrize('method', METHODS)
def test_numpy_runtime_matches_keras_within_1e4(method):
    keras = pytest.importorskip('tf_keras')
    import tensorflow as tf
    from training import dataset
    from training.train import build_keras_model, load_exported, lstm_offset_tf
    model = lstm_model.load_model(lstm_model.default_model_dir(method), method)
    card = model.card
    arch = card['architecture']
    # Real inputs of a take with outliers and dropouts, normalised as at run time.
    take = _take('handheld', seconds=6.0, noise=TrackerNoise(spike_rate_hz=1.0,
                                                             dropout_rate=0.02))
    inputs, loss_arrays = dataset.take_arrays(method, take, lstm_model.kalman_params(card))
    first = len(learned_features.FEATURES[method])
    x = inputs.copy()
    x[:, :first] = model.normalize(inputs[:, :first])
    keras_model = build_keras_model(keras, tf, method, x.shape[1], arch['lstm_units'],
                                    arch['output_size'])
    with np.load(model.path / card['weights']['file']) as npz:
        load_exported(keras_model, npz)
    expected = keras_model.predict(x[None].astype(np.float32), verbose=0)[0]
    if method == 'lstm':
        batched = model.network.run(x[None])[0]
        state = model.network.initial_state()
        streamed = []
        for row in x:
            out, state = model.network.step(row, state)
            streamed.append(out)
        assert np.max(np.abs(batched - expected)) < 1e-4
        assert np.max(np.abs(np.array(streamed) - expected)) < 1e-4
        # The loss's move of the measurement (body frame), from the Keras outputs.
        expected = lstm_offset_tf(tf, tf.constant(expected),
                                  tf.constant(loss_arrays, tf.float32)).numpy()
        sigma = loss_arrays[:, 12:18]
    else:
        # The hybrid's cell outputs the estimate's offset from the measurement.
        sigma = np.repeat(inputs[:, first + 16:first + 18], 3, axis=1)
    # Compare, in measured sigmas, with what the runtime emits, batched and streamed.
    smoother = make_smoother(method)
    z_q = quat.make_continuous(quat.normalize(take.noisy_q))
    moved = sigma > 0.0  # the lstm does not move a started frame (sigma 0 in its loss arrays)
    for p, q in (smoother.smooth(take.t, take.noisy_p, take.noisy_q)[1:],
                 _streamed(smoother, take.t, take.noisy_p, take.noisy_q)[1:]):
        body = learned_features.rotate(learned_features.columns(z_q),
                                       learned_features.columns(p - take.noisy_p), inverse=True)
        offset = np.column_stack([np.column_stack(body),
                                  quat.log_map(quat.multiply(quat.conjugate(z_q), q))])
        assert np.max(np.abs(offset - expected)[moved] / sigma[moved]) < 1e-4
        assert np.all(np.abs(offset[~moved]) < 1e-12)
        smoother.reset()


@pytest.mark.parametrize('method', METHODS)
def test_missing_model_falls_back_to_kalman_with_a_warning(method, tmp_path, caplog):
    missing = tmp_path / 'nowhere'
    with caplog.at_level(logging.WARNING):
        smoother = make_smoother(method, model_path=str(missing))
    assert smoother.fallback
    assert 'fallback to kalman' in smoother.model_status
    assert str(missing / lstm_model.CARD_FILE) in smoother.model_status
    assert any('running kalman instead' in r.getMessage() for r in caplog.records)
    take = _take(seconds=3.0)
    _, p, q = smoother.smooth(take.t, take.noisy_p, take.noisy_q)
    _, kp, kq = make_smoother('kalman').smooth(take.t, take.noisy_p, take.noisy_q)
    assert np.array_equal(p, kp) and np.array_equal(q, kq)
    _, sp, _ = _streamed(smoother, take.t, take.noisy_p, take.noisy_q)
    assert np.array_equal(sp, kp)


def _corrupt_json(directory):
    (directory / lstm_model.CARD_FILE).write_text('{"format": "camstab-model-card", ')
    return lstm_model.CARD_FILE, 'unreadable model card'


def _wrong_version(directory):
    card = _card(directory)
    card['card_version'] = 99
    _write_card(directory, card)
    return lstm_model.CARD_FILE, 'card version 99 is not supported'


def _wrong_method(directory):
    card = _card(directory)
    card['method'] = 'something_else'
    _write_card(directory, card)
    return lstm_model.CARD_FILE, 'is for method'


def _checksum_mismatch(directory):
    weights = directory / _card(directory)['weights']['file']
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    return weights.name, 'checksum mismatch'


def _missing_weights(directory):
    (directory / _card(directory)['weights']['file']).unlink()
    return 'weights.npz', 'not found'


def _resave(directory, arrays):
    card = _card(directory)
    weights = directory / card['weights']['file']
    np.savez(weights, **arrays)
    card['weights']['sha256'] = lstm_model.sha256_of(weights)
    _write_card(directory, card)
    return weights.name


def _wrong_shapes(directory):
    with np.load(directory / 'weights.npz') as npz:
        arrays = dict(npz)
    arrays['dense/kernel'] = arrays['dense/kernel'][:-1]
    return _resave(directory, arrays), "'dense/kernel' has shape"


def _non_finite_weights(directory):
    with np.load(directory / 'weights.npz') as npz:
        arrays = dict(npz)
    arrays['dense/bias'][0] = np.nan
    return _resave(directory, arrays), 'non-finite'


def _garbage_weights_with_matching_checksum(directory):
    card = _card(directory)
    weights = directory / card['weights']['file']
    weights.write_bytes(b'PK\x03\x04 this is not a zip archive')
    card['weights']['sha256'] = lstm_model.sha256_of(weights)
    _write_card(directory, card)
    return weights.name, 'corrupt weights file'


def _pickled_weights(directory):
    card = _card(directory)
    weights = directory / card['weights']['file']
    np.save(weights.with_suffix('.npy'), np.array([{'a': 1}], dtype=object))
    weights.write_bytes(weights.with_suffix('.npy').read_bytes())
    card['weights']['sha256'] = lstm_model.sha256_of(weights)
    _write_card(directory, card)
    return weights.name, 'corrupt weights file'


def _feature_mismatch(directory):
    card = _card(directory)
    card['features']['names'] = card['features']['names'][::-1]
    _write_card(directory, card)
    return lstm_model.CARD_FILE, 'feature definition differs'


def _output_mismatch(directory):
    card = _card(directory)
    card['outputs']['activation'] = 'linear'
    _write_card(directory, card)
    return lstm_model.CARD_FILE, 'output definition differs'


def _deeply_nested_card(directory):
    (directory / lstm_model.CARD_FILE).write_text('[' * 200000)
    return lstm_model.CARD_FILE, 'unreadable model card'


def _weights_file(name):
    def corrupt(directory):
        card = _card(directory)
        card['weights']['file'] = name
        _write_card(directory, card)
        return lstm_model.CARD_FILE, 'must be a relative path inside the model directory'
    corrupt.__name__ = f'_weights_file_{name.strip("/.").replace("/", "_")}'
    return corrupt


def _weights_linked_outside(directory):
    weights = directory / _card(directory)['weights']['file']
    weights.unlink()
    weights.symlink_to('/dev/zero')
    return lstm_model.CARD_FILE, 'leads outside the model directory'


def _huge_array(directory):
    # 100 MB of zeros compress to ~100 kB: the file is small, the array is not.
    card = _card(directory)
    weights = directory / card['weights']['file']
    with np.load(weights) as npz:
        arrays = dict(npz)
    with zipfile.ZipFile(weights, 'w', zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            with archive.open(f'{name}.npy', 'w', force_zip64=True) as member:
                if name != 'dense/bias':
                    np.lib.format.write_array(member, array)
                    continue
                np.lib.format.write_array_header_1_0(member, {
                    'descr': '<f8', 'fortran_order': False, 'shape': (12_500_000,)})
                for _ in range(100):
                    member.write(bytes(1 << 20))
    card['weights']['sha256'] = lstm_model.sha256_of(weights)
    _write_card(directory, card)
    return weights.name, "array 'dense/bias' is"


def _nan_clip(directory):
    card = _card(directory)
    card['features']['clip'] = 'nan'
    _write_card(directory, card)
    return lstm_model.CARD_FILE, 'features.clip must be a positive number'


CORRUPTIONS = [_corrupt_json, _wrong_version, _wrong_method, _checksum_mismatch,
               _missing_weights, _wrong_shapes, _non_finite_weights,
               _garbage_weights_with_matching_checksum, _pickled_weights, _feature_mismatch,
               _output_mismatch,
               _deeply_nested_card, _weights_file('/dev/zero'), _weights_file('../weights.npz'),
               _weights_linked_outside, _huge_array, _nan_clip]


@pytest.mark.parametrize('method', METHODS)
@pytest.mark.parametrize('corrupt', CORRUPTIONS, ids=lambda f: f.__name__.strip('_'))
def test_bad_model_gives_a_clear_error_naming_the_file_and_falls_back(method, corrupt,
                                                                      tmp_path, caplog):
    directory = _model_copy(tmp_path, method)
    filename, message = corrupt(directory)
    with pytest.raises(lstm_model.ModelError, match=message) as info:
        lstm_model.load_model(directory, method)
    assert str(directory / filename) in str(info.value)
    with caplog.at_level(logging.WARNING):
        smoother = make_smoother(method, model_path=str(directory))
    assert smoother.fallback and message in smoother.model_status
    assert any(filename in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize('method', METHODS)
def test_card_with_an_incomplete_kalman_configuration_is_rejected(method, tmp_path):
    directory = _model_copy(tmp_path, method)
    card = _card(directory)
    del card['kalman']['process_noise']
    _write_card(directory, card)
    with pytest.raises(lstm_model.ModelError, match='every Kalman parameter'):
        lstm_model.load_model(directory, method)
    card['kalman']['process_noise'] = -1.0
    _write_card(directory, card)
    with pytest.raises(lstm_model.ModelError, match='process_noise'):
        lstm_model.load_model(directory, method)


def test_hybrid_runs_the_kalman_configuration_of_its_card_not_the_kalman_defaults():
    smoother = make_smoother('hybrid')
    stored = lstm_model.kalman_params(smoother.model.card)
    assert smoother._kf._gate2 == stored['gate_sigma'] ** 2
    take = _take(seconds=3.0)
    smoother.update(take.t[0], take.noisy_p[0], take.noisy_q[0])
    smoother.update(take.t[1], take.noisy_p[1], take.noisy_q[1])
    expected = learned_features.kalman_pass(stored, take.t[:2], take.noisy_p[:2], take.noisy_q[:2])
    assert np.allclose(smoother._kf.x[POS, 0], expected.position[1])


@pytest.mark.parametrize('choice', ['measurement', 'own', 'kalman', 'network'])
def test_hybrid_output_lies_in_the_triangle_of_measurement_and_predictions(choice):
    # Whatever the network says (here: gone wild, each way, or as trained), the estimate is
    # a weighted mean of the measurement, the own filter's prediction (the previous estimate
    # moved on by the Kalman filter's velocity) and the Kalman filter's prediction, and never
    # more than HOLD_CAP_SIGMA measured sigmas from the measurement. Recomputed here from
    # the emitted estimates and the Kalman pass alone.
    take = _take('handheld', seconds=4.0, noise=TrackerNoise(spike_rate_hz=1.0))
    smoother = make_smoother('hybrid')
    wild = {'measurement': [-1e6] * 4, 'own': [1e6, -1e6] * 2, 'kalman': [-1e6, 1e6] * 2}
    if choice in wild:
        smoother.model.network.dense_b[:] = wild[choice]
    _, p, q = _streamed(smoother, take.t, take.noisy_p, take.noisy_q)
    record = _kalman_stage(smoother, take)
    z_p, z_q = take.noisy_p, quat.make_continuous(take.noisy_q)
    # Frames whose own filter runs on from the previous estimate.
    steady = ~record.restarted[1:, POS] & ~record.passed[:-1, POS]
    own = (p[:-1] + record.velocity[:-1] * record.dt[1:, None] - z_p[1:])[steady]
    kalman = -record.innovation[1:, POS][steady]
    shift = (p - z_p)[1:][steady]
    cap = learned_features.HOLD_CAP_SIGMA
    sigma = record.sigma[1:][steady]
    assert np.all(np.linalg.norm(shift, axis=1) <= cap * sigma[:, 0] * (1 + 1e-9))
    assert np.all(quat.angle_between(q, z_q) <= cap * record.sigma[:, 1] * (1 + 1e-9) + 1e-12)
    assert np.all((p == z_p)[record.restarted[:, POS]])
    if choice == 'measurement':
        assert np.allclose(p, z_p, atol=1e-12)
        return
    if choice in ('own', 'kalman'):
        target = own if choice == 'own' else kalman
        within = np.linalg.norm(target, axis=1) <= cap * sigma[:, 0]
        assert np.any(within) and np.any(~within)
        assert np.allclose(shift[within], target[within], atol=1e-12)
        return
    # shift = a own + b kalman with a, b >= 0 and a + b <= 1: solved where well posed.
    basis = np.stack([own, kalman], axis=2)
    well = np.linalg.cond(basis) < 1e3
    coef = np.einsum('nij,nj->ni', np.linalg.pinv(basis[well]), shift[well])
    assert np.count_nonzero(well) > len(shift) // 2
    assert np.allclose(np.einsum('nij,nj->ni', basis[well], coef), shift[well], atol=1e-12)
    assert np.all(coef >= -1e-6) and np.all(coef.sum(axis=1) <= 1 + 1e-6)
    assert np.any(coef.sum(axis=1) > 0.05)  # the trained network does move estimates


def test_lstm_offset_is_a_share_of_the_way_to_the_kalman_estimate_capped_in_sigmas():
    sigma = np.array([1e-3] * 3 + [1e-4] * 3)
    towards = np.array([2e-3, -5e-3, 0.0, 1e-4, -1e-3, 7e-4])
    out = np.array([20.0, 20.0, 20.0, 0.0, -20.0, 20.0])
    moved = learned_features.lstm_offset(out, towards, sigma)
    cap = learned_features.CAP_SIGMA * sigma
    assert np.allclose(moved, [2e-3, -cap[1], 0.0, 0.5e-4, 0.0, cap[5]], rtol=1e-6, atol=1e-11)


@pytest.mark.parametrize('share', (1.0, 0.0))
def test_lstm_moves_a_measurement_only_towards_the_kalman_estimate_within_its_cap(share):
    take = _take('whip_pan', seconds=4.0, noise=TrackerNoise(pos_sigma_m=0.002))
    smoother = make_smoother('lstm')
    smoother.model.network.dense_b[:] = 1e6 if share else -1e6
    z_q = quat.make_continuous(take.noisy_q)
    record = _kalman_stage(smoother, take)
    towards = learned_features.towards_kalman(take.noisy_p, z_q, record.position,
                                              record.output_q)
    cap = learned_features.CAP_SIGMA * np.repeat(record.sigma, 3, axis=1)
    started = learned_features.lstm_features(take.t, take.noisy_p, z_q, record)[:, -1] > 0
    expected = np.clip(share * towards, -cap, cap)
    expected[started] = 0.0
    for _, p, q in (_streamed(smoother, take.t, take.noisy_p, take.noisy_q),
                    smoother.smooth(take.t, take.noisy_p, take.noisy_q)):
        body = learned_features.rotate(learned_features.columns(z_q),
                                       learned_features.columns(p - take.noisy_p), inverse=True)
        moved = np.column_stack([np.column_stack(body),
                                 quat.log_map(quat.multiply(quat.conjugate(z_q), q))])
        assert np.max(np.abs(moved - expected) / np.maximum(cap, 1e-12)) < 1e-9
        smoother.reset()


@pytest.mark.parametrize('method', METHODS)
def test_non_finite_output_falls_back_to_the_uncorrected_estimate(method, caplog):
    take = _take(seconds=3.0)
    smoother = make_smoother(method)
    smoother.model.network.dense_b[0] = np.nan
    with caplog.at_level(logging.WARNING):
        _, p, q = _streamed(smoother, take.t, take.noisy_p, take.noisy_q)
    assert smoother.nonfinite_outputs == len(take.t)
    assert any('non-finite network output' in r.getMessage() for r in caplog.records)
    if method == 'hybrid':
        record = _kalman_stage(smoother, take)
        base_p, base_q = record.position, record.output_q
    else:
        base_p, base_q = take.noisy_p, take.noisy_q
    assert np.allclose(p, base_p, atol=1e-12)
    assert np.allclose(np.abs(np.sum(q * base_q, axis=1)), 1.0)
    _, bp, _ = smoother.smooth(take.t, take.noisy_p, take.noisy_q)
    assert np.allclose(bp, base_p, atol=1e-12)


@pytest.mark.parametrize('method', METHODS)
def test_the_same_take_shifted_by_100m_gets_the_same_corrections(method):
    take = _take('crane', seconds=6.0, noise=TrackerNoise(spike_rate_hz=0.5))
    offset = np.array([100.0, -100.0, 100.0])
    smoother = make_smoother(method)
    _, p, q = _streamed(smoother, take.t, take.noisy_p, take.noisy_q)
    smoother.reset()
    _, ps, qs = _streamed(smoother, take.t, take.noisy_p + offset, take.noisy_q)
    assert np.max(np.abs((ps - offset) - p)) < 1e-6
    assert np.max(np.degrees(quat.angle_between(q, qs))) < 1e-6
    _, pb, _ = smoother.smooth(take.t, take.noisy_p, take.noisy_q)
    _, pbs, _ = smoother.smooth(take.t, take.noisy_p + offset, take.noisy_q)
    assert np.max(np.abs((pbs - offset) - pb)) < 1e-6


@pytest.mark.parametrize('method', METHODS)
def test_smooth_equals_streaming_update(method):
    take = _take('orbit', seconds=10.0, noise=TrackerNoise(dropout_rate=0.02,
                                                           spike_rate_hz=0.5))
    smoother = make_smoother(method)
    _, sp, sq = _streamed(smoother, take.t, take.noisy_p, take.noisy_q)
    t, bp, bq = smoother.smooth(take.t, take.noisy_p, take.noisy_q)
    assert np.array_equal(t, take.t)
    assert np.max(np.abs(bp - sp)) < 1e-9
    assert np.max(np.degrees(quat.angle_between(bq, sq))) < 1e-7


@pytest.mark.parametrize('method', METHODS)
def test_chunked_smooth_stays_close_to_streaming_on_long_takes(method, monkeypatch):
    # A long take in miniature: chunks of 2000 frames, the default warm-up.
    monkeypatch.setattr(lstm_model, 'CHUNK_FRAMES', 2000)
    take = _take('handheld', seconds=50.0, rate_hz=120.0, seed=5)
    smoother = make_smoother(method)
    _, sp, sq = _streamed(smoother, take.t, take.noisy_p, take.noisy_q)
    _, bp, bq = smoother.smooth(take.t, take.noisy_p, take.noisy_q)
    gap_mm = np.linalg.norm(bp - sp, axis=1) * 1e3
    assert np.max(gap_mm[:2000]) < 1e-9
    assert np.max(gap_mm) < 0.01
    assert np.max(np.degrees(quat.angle_between(bq, sq))) < 1e-3


# Run in a process of its own: the test runner's threads would make the pass run in one
# piece (a process with threads never forks).
PIECES_PROBE = """
import json
import numpy as np
from camstab_ros.core import learned_features as lf, quaternion as quat
from camstab_ros.core.lstm_model import default_model_dir, kalman_params, load_model
from camstab_ros.core.noise_meter import NoiseMeter
from camstab_ros.core.simulation import NOISE_PRESETS, simulate
from camstab_ros.core.smoother import SmootherStats
params = kalman_params(load_model(default_model_dir('hybrid'), 'hybrid').card)
lf.PASS_WARMUP_S = 20.0
cases = {'stress 120 Hz, the pipeline meter': ('handheld', 'stress', 120.0, 0, True),
         'locked-off 25 Hz, own meter': ('locked_off', 'default', 25.0, 0, False),
         'locked-off 25 Hz, a fresh filter settles elsewhere': ('locked_off', 'default', 25.0,
                                                                2, False)}
figures = {}
for name, (scenario, noise, rate, seed, pipeline) in cases.items():
    take = simulate(scenario, seconds=240.0, rate_hz=rate, seed=seed,
                    noise=NOISE_PRESETS[noise])
    t = take.t.copy()
    t[len(t) // 2:] += 2.0  # a gap: the filter restarts there
    q = quat.make_continuous(quat.normalize(take.noisy_q))
    out = {}
    for pieces in (1, 3):
        stats, ticks = SmootherStats(), []
        meter = NoiseMeter() if pipeline else None
        def progress(rows):
            for row in rows:
                ticks.append(row)
                yield row
        record = lf.kalman_pass(params, t, take.noisy_p, q, stats, meter, progress,
                                pieces=pieces)
        out[pieces] = (record, stats.as_dict(), meter and meter.reading(), len(ticks))
    one, three = out[1], out[3]
    figures[name] = {
        'worst': max(float(np.max(np.abs(getattr(one[0], k).astype(float)
                                         - getattr(three[0], k).astype(float))))
                     for k in vars(one[0]) if k != 'pieces'),
        'pieces': three[0].pieces, 'stats': [one[1], three[1]],
        'readings': [one[2], three[2]], 'ticks': [one[3], three[3], len(t)]}
print(json.dumps(figures))
"""


def test_a_long_take_in_pieces_gives_the_one_piece_kalman_pass():
    result = subprocess.run([sys.executable, '-c', PIECES_PROBE], cwd=PROJECT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    for name, case in figures.items():
        assert case['worst'] < 1e-9, name  # every array of the record (1e-11 seen)
        one, three = case['stats']
        assert one == three and one['resets'] == 1, name
        assert case['readings'][0] == case['readings'][1], name
        ticks_one, ticks_three, poses = case['ticks']
        assert ticks_one == ticks_three == poses, name  # the progress sees every pose once
    # The pieces ran and were kept; where a fresh filter settled elsewhere (the noise it
    # trusts below 60 Hz depends on its own speed) the take ran on in one piece.
    assert figures['stress 120 Hz, the pipeline meter']['pieces'] == 3
    assert figures['stress 120 Hz, the pipeline meter']['stats'][0]['outliers'] > 0
    assert figures['locked-off 25 Hz, own meter']['pieces'] == 3
    assert figures['locked-off 25 Hz, a fresh filter settles elsewhere']['pieces'] == 1


def test_a_process_with_threads_runs_the_pass_in_one_piece():
    waiting = threading.Event()
    thread = threading.Thread(target=waiting.wait)
    thread.start()
    try:
        assert not learned_features.may_fork()
        take = _take(seconds=12.0)
        record = learned_features.kalman_pass(_stage(), take.t, take.noisy_p, take.noisy_q,
                                              pieces=2)
    finally:
        waiting.set()
        thread.join()
    assert record.pieces == 1


def test_a_kalman_pass_refuses_stamps_that_do_not_increase():
    take = _take(seconds=2.0)
    t = take.t.copy()
    t[50] = t[49]
    with pytest.raises(ValueError, match='timestamps must increase'):
        learned_features.kalman_pass(_stage(), t, take.noisy_p, take.noisy_q)


def _stage():
    from training.train import STAGE_KALMAN
    return STAGE_KALMAN


@pytest.mark.parametrize('method', METHODS)
def test_learned_methods_keep_one_output_per_input_at_every_rate(method):
    for rate in (24.0, 240.0):
        take = _take('pan', seconds=3.0, rate_hz=rate)
        t, p, _ = make_smoother(method).smooth(take.t, take.noisy_p, take.noisy_q)
        assert len(t) == len(take.t) and np.all(np.isfinite(p))


@pytest.mark.parametrize('method', METHODS)
def test_timestamps_going_backwards_raise(method):
    take = _take(seconds=1.0)
    t = take.t.copy()
    t[10] = t[9]
    with pytest.raises(ValueError, match='timestamps must increase'):
        make_smoother(method).smooth(t, take.noisy_p, take.noisy_q)

"""The tracker matrix (training/matrix.py): its takes and its summary."""
from camstab_ros.core.simulation import NOISE_PRESETS, simulate
from camstab_ros.io.trajectory import read_trajectory
from helpers import hybrid_with_output_bias
import numpy as np
import pytest
from training import matrix
from training.splits import REAL_TEST_TAKES, REAL_TRAIN_TAKES, REAL_VALIDATION_TAKES


def test_real_pieces_never_span_a_gap_of_the_recorded_truth():
    takes = REAL_TRAIN_TAKES + REAL_VALIDATION_TAKES + REAL_TEST_TAKES
    if not matrix.REAL.is_dir():
        pytest.skip('shared real takes not available')
    pieces = list(matrix.real_pieces(60.0, takes))
    truths = {name: read_trajectory(matrix.REAL / name) for name in takes}
    for name, t, p, q in pieces:
        truth = truths[name.split('@')[0] + '_groundtruth.txt']
        inside = truth.t[(truth.t >= t[0] - 0.1) & (truth.t <= t[-1] + 0.1)]
        step = np.median(np.diff(truth.t))
        assert np.max(np.diff(inside)) <= matrix.MAX_TRUTH_GAP * step, name
        assert matrix.MIN_PIECE_S - 0.1 <= t[-1] - t[0] <= matrix.PIECE_SECONDS
        assert np.allclose(np.linalg.norm(q, axis=1), 1.0)


def test_a_missing_real_take_is_an_error_naming_it(tmp_path, monkeypatch):
    # A matrix or training set silently without its real motion would look complete.
    monkeypatch.setattr(matrix, 'REAL', tmp_path)
    with pytest.raises(FileNotFoundError, match=str(tmp_path / REAL_TEST_TAKES[0])):
        list(matrix.real_pieces(60.0))


def test_a_cell_measures_every_method_against_raw_and_the_oracle():
    sim = simulate('dolly', 8.0, 60.0, 5, NOISE_PRESETS['none'])
    cell = matrix.run_cell(('dolly', 'optical', 60.0, sim.t, sim.truth_p, sim.truth_q, 9,
                           matrix.method_rows()))
    name, tracker, rate, rows = cell
    assert {'raw', 'oracle', 'lowpass_oracle', 'passthrough', 'kalman'} <= set(rows)
    assert rows['passthrough']['screen_rmse_px'] == pytest.approx(rows['raw']['screen_rmse_px'])
    # The oracle picks its gains on the truth: never worse than raw (alpha 1 is raw).
    assert rows['oracle']['pos_rmse_mm'] <= rows['raw']['pos_rmse_mm'] * (1 + 1e-9)
    # So does the offline low-pass (no filter is among its choices), and it smooths.
    for key in ('pos_rmse_mm', 'rot_rmse_deg'):
        assert rows['lowpass_oracle'][key] <= rows['raw'][key] * (1 + 1e-9)
    assert rows['lowpass_oracle']['pos_rmse_mm'] < 0.9 * rows['raw']['pos_rmse_mm']
    figures = matrix.summary([cell, cell])
    assert figures['passthrough']['worst_screen_rmse_px'] == pytest.approx(1.0)
    assert figures['passthrough']['takes_worse_than_raw'] == 0
    assert figures['kalman']['takes'] == 2
    assert 'kalman' in matrix.table(figures)


def test_the_validation_split_shares_no_take_with_the_test_split():
    if not matrix.REAL.is_dir():
        pytest.skip('shared real takes not available')

    def first_rate(split):
        return [c for c in matrix.cells(split, rows=[]) if c[2] == matrix.RATES_HZ[0]]
    test, validation = first_rate('test'), first_rate('validation')
    real = [c[0] for c in validation if c[0] not in matrix.SCENARIOS]
    assert real and all(name.startswith('tumvi_room5@') for name in real)
    assert not any(c[0].startswith('tumvi_room5@') for c in test)
    for a, b in zip(test, validation):
        if a[0] == b[0]:  # the same scenario, other motion
            assert not np.allclose(a[4], b[4])


def test_a_candidate_row_runs_the_model_in_its_directory(tmp_path):
    # A candidate whose network is pushed to the Kalman prediction: not the shipped model.
    directory = hybrid_with_output_bias(tmp_path / 'candidate', [-20.0, 20.0, -20.0, 20.0])
    sim = simulate('pan', 4.0, 60.0, 5, NOISE_PRESETS['none'])
    rows = matrix.method_rows(['hybrid'], [('candidate', directory)])
    assert [r[:2] for r in rows] == [('hybrid', 'hybrid'), ('candidate', 'hybrid')]
    *_, metrics = matrix.run_cell(('pan', 'optical', 60.0, sim.t, sim.truth_p, sim.truth_q, 9,
                                   rows))
    for key in ('screen_rmse_px', 'pos_rmse_mm'):
        assert metrics['candidate'][key] not in (metrics['hybrid'][key], metrics['raw'][key])


@pytest.mark.parametrize('argv', (
    ['--split', 'validation', '--candidate', 'x=/nonexistent'],
    ['--split', 'validation', '--candidate', 'x'],
    ['--split', 'validation', '--methods', 'kalman,bogus'], ['--split', 'train'],
    ['--methods', 'kalman'], ['--candidate', f'x={matrix.ROOT / "models" / "hybrid"}'],
    ['--split', 'validation', '--candidate', f'oracle={matrix.ROOT / "models" / "hybrid"}']))
def test_bad_matrix_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        matrix.main(argv)
    assert exc.value.code == 2
    assert capsys.readouterr().err

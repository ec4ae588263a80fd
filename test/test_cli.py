"""The `camstab` command as a user runs it: real processes, real files, exit codes."""
import json
import subprocess
import sys
import time

from camstab_ros.io.trajectory import read_trajectory, write_trajectory
from helpers import moving_take
import numpy as np
import pytest


def camstab(*args, cwd=None):
    return subprocess.run([sys.executable, '-m', 'camstab_ros.cli', *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.fixture
def take(tmp_path):
    t, tp, tq, p, q = moving_take(600, seed=3)
    write_trajectory(tmp_path / 'noisy.tum', t, p, q)
    write_trajectory(tmp_path / 'truth.tum', t, tp, tq)
    return tmp_path


@pytest.mark.parametrize('command', ['simulate', 'smooth', 'evaluate', 'bench', 'methods'])
def test_every_subcommand_has_help(command):
    result = camstab(command, '--help')
    assert result.returncode == 0
    assert f'usage: camstab {command}' in result.stdout


@pytest.mark.parametrize('suffix', ['.tum', '.csv'])
def test_smooth_writes_one_pose_per_input_in_the_same_format(take, suffix):
    source = take / f'in{suffix}'
    noisy = read_trajectory(take / 'noisy.tum')
    write_trajectory(source, noisy.t, noisy.p, noisy.q)
    out = take / f'out{suffix}'
    result = camstab('smooth', '--method', 'one_euro', '--param', 'min_cutoff=2.0',
                     source, out)
    assert result.returncode == 0, result.stderr
    smoothed = read_trajectory(out)
    np.testing.assert_allclose(smoothed.t, noisy.t, atol=1e-6)
    assert not np.allclose(smoothed.p, noisy.p)
    if suffix == '.csv':
        assert out.read_text().startswith('t,x,y,z,qx,qy,qz,qw\n')


def test_smooth_keeps_one_output_per_input_across_bad_rows(take):
    lines = (take / 'noisy.tum').read_text().splitlines()
    data = [line for line in lines if not line.startswith('#')]
    fields = data[10].split()
    data[10] = ' '.join(fields[:1] + ['nan'] + fields[2:])
    data[20] = ' '.join(data[20].split()[:4] + ['0', '0', '0', '0'])
    data[30] = data[29]
    (take / 'bad.tum').write_text('\n'.join(data) + '\n')
    result = camstab('smooth', '--method', 'ema', take / 'bad.tum', take / 'out.tum')
    assert result.returncode == 0, result.stderr
    assert '1 pose(s) invalid (non_finite), first at pose 11' in result.stderr
    assert '(zero_quaternion)' in result.stderr and '(stamp_not_increasing)' in result.stderr
    out = read_trajectory(take / 'out.tum')
    assert len(out) == len(data) and np.all(np.isfinite(out.p))


@pytest.mark.parametrize('args, message', [
    (['--method', 'nope'], "unknown method 'nope'"),
    (['--param', 'min_cutoff=-3'], "'min_cutoff': -3.0 is out of range; valid: 0.001 .. 1000 Hz"),
    (['--param', 'gain=2'], "unknown parameter 'gain'"),
    (['--param', 'min_cutoff'], 'expects KEY=VALUE'),
])
def test_bad_methods_and_parameters_exit_2_without_writing(take, args, message):
    if '--method' not in args:
        args = ['--method', 'one_euro'] + args
    result = camstab('smooth', *args, take / 'noisy.tum', take / 'out.tum')
    assert result.returncode == 2
    assert message in result.stderr and 'Traceback' not in result.stderr
    assert not (take / 'out.tum').exists()


@pytest.mark.parametrize('content, message', [
    ('', 'no poses in file'),
    ('0 0 0 0 0 0 0 1\n1 0 0 0 0 0 1\n', 'expected 8 columns'),
    ('0 0 0 0 0 0 0 1\n1 0 0 zero 0 0 0 1\n', 'not a number'),
    ('0 nan 0 0 0 0 0 1\n1 0 0 0 0 0 0 0\n', 'no valid pose'),
])
def test_bad_files_exit_2_with_a_clear_error_and_no_output(tmp_path, content, message):
    (tmp_path / 'in.tum').write_text(content)
    result = camstab('smooth', tmp_path / 'in.tum', tmp_path / 'out.tum')
    assert result.returncode == 2
    assert message in result.stderr and 'Traceback' not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ['in.tum']


def test_missing_input_and_unwritable_output(take):
    result = camstab('smooth', take / 'missing.tum', take / 'out.tum')
    assert result.returncode == 2 and 'cannot read' in result.stderr
    result = camstab('smooth', take / 'noisy.tum', take / 'no_dir' / 'out.tum')
    assert result.returncode == 2 and 'does not exist' in result.stderr


def test_evaluate_prints_a_table_and_writes_json(take):
    result = camstab('evaluate', '--truth', take / 'truth.tum', '--methods',
                     'passthrough,one_euro,kalman', '--json', take / 'm.json',
                     take / 'noisy.tum')
    assert result.returncode == 0, result.stderr
    assert 'pos_rmse_mm' in result.stdout and 'one_euro' in result.stdout
    metrics = json.loads((take / 'm.json').read_text())
    assert set(metrics) == {'passthrough', 'one_euro', 'kalman'}
    for values in metrics.values():
        assert {'pos_rmse_mm', 'jitter_mm', 'jitter_still_mm', 'lag_ms',
                'us_per_pose'} <= set(values)
    assert metrics['kalman']['jitter_mm'] < metrics['passthrough']['jitter_mm']


def test_evaluate_rejects_truth_with_other_timestamps(take, tmp_path):
    truth = read_trajectory(take / 'truth.tum')
    write_trajectory(tmp_path / 'shifted.tum', truth.t + 0.5, truth.p, truth.q)
    result = camstab('evaluate', '--truth', tmp_path / 'shifted.tum', '--methods', 'ema',
                     take / 'noisy.tum')
    assert result.returncode == 2 and 'no truth pose at' in result.stderr
    result = camstab('evaluate', '--truth', take / 'truth.tum', '--methods', 'ema,bogus',
                     take / 'noisy.tum')
    assert result.returncode == 2 and "unknown method 'bogus'" in result.stderr


def test_simulate_writes_noisy_and_truth_with_shared_stamps(tmp_path):
    result = camstab('simulate', '--scenario', 'dolly', '--seconds', 5, '--rate', 50,
                     '--seed', 4, '--out', tmp_path / 'take')
    assert result.returncode == 0, result.stderr
    noisy = read_trajectory(tmp_path / 'take' / 'noisy.tum')
    truth = read_trajectory(tmp_path / 'take' / 'truth.tum')
    assert len(noisy) == len(truth) == 250
    np.testing.assert_array_equal(noisy.t, truth.t)
    again = camstab('simulate', '--scenario', 'dolly', '--seconds', 5, '--rate', 50,
                    '--seed', 4, '--out', tmp_path / 'again')
    assert again.returncode == 0
    assert (tmp_path / 'again' / 'noisy.tum').read_text() == (
        tmp_path / 'take' / 'noisy.tum').read_text()
    bad = camstab('simulate', '--scenario', 'moonwalk', '--out', tmp_path / 'x')
    assert bad.returncode == 2 and 'moonwalk' in bad.stderr


def test_bench_reports_every_method_against_passthrough(tmp_path):
    result = camstab('bench', '--methods', 'passthrough,ema,kalman', '--json',
                     tmp_path / 'b.json')
    assert result.returncode == 0, result.stderr
    figures = json.loads((tmp_path / 'b.json').read_text())
    assert figures['passthrough']['ratio'] == pytest.approx(1.0)
    for method in ('ema', 'kalman'):
        assert figures[method]['median_us'] > 0
        assert figures[method]['p99_us'] >= figures[method]['median_us']


def test_a_missing_model_falls_back_with_a_warning_or_fails_with_strict(take):
    args = ('smooth', '--method', 'hybrid', '--param', f'model_path={take / "none"}')
    result = camstab(*args, take / 'noisy.tum', take / 'out.tum')
    assert result.returncode == 0 and 'fallback to kalman' in result.stderr
    result = camstab(*args, '--strict', take / 'noisy.tum', take / 'strict.tum')
    assert result.returncode == 2 and '--strict' in result.stderr
    assert not (take / 'strict.tum').exists()


def test_outputs_never_clobber_the_input_or_a_link_and_get_a_normal_mode(take):
    noisy = take / 'noisy.tum'
    before = noisy.read_bytes()
    result = camstab('smooth', '--method', 'ema', noisy, take / '.' / 'noisy.tum')
    assert result.returncode == 2 and 'would overwrite the input' in result.stderr
    assert noisy.read_bytes() == before
    (take / 'link.tum').symlink_to(take / 'truth.tum')
    result = camstab('smooth', '--method', 'ema', noisy, take / 'link.tum')
    assert result.returncode == 2 and 'symbolic link' in result.stderr
    assert (take / 'link.tum').is_symlink()
    result = subprocess.run(
        ['sh', '-c', f'umask 022 && {sys.executable} -m camstab_ros.cli smooth --method ema '
         f'{noisy} {take / "out.tum"}'], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (take / 'out.tum').stat().st_mode & 0o777 == 0o644
    assert not list(take.glob('.*.part'))


def test_unwritable_outputs_exit_2_with_one_line(take):
    for args in (('evaluate', '--truth', take / 'truth.tum', '--methods', 'ema', '--json',
                  '/dev/null/x.json', take / 'noisy.tum'),
                 ('simulate', '--out', '/dev/null/take'),
                 ('smooth', take / 'noisy.tum', '/dev/null/out.tum')):
        result = camstab(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.strip().startswith('camstab: error:'), result.stderr
        assert 'Traceback' not in result.stderr


def test_a_csv_field_too_large_names_the_line(tmp_path):
    path = tmp_path / 'big.csv'
    path.write_text('t,x,y,z,qx,qy,qz,qw\n0,0,0,0,0,0,0,1\n"' + 'x' * 200000 + '",0\n')
    result = camstab('smooth', path, tmp_path / 'out.csv')
    assert result.returncode == 2 and 'big.csv:3: malformed CSV' in result.stderr


def test_sigterm_leaves_no_partial_output(tmp_path):
    t, _, _, p, q = moving_take(400000, rate_hz=240.0, seed=1)
    write_trajectory(tmp_path / 'long.tum', t, p, q)
    proc = subprocess.Popen([sys.executable, '-m', 'camstab_ros.cli', 'smooth', '--method',
                             'kalman', tmp_path / 'long.tum', tmp_path / 'out.tum'],
                            stderr=subprocess.PIPE, text=True)
    time.sleep(4.0)
    proc.terminate()
    assert proc.wait(60) == 143
    assert sorted(f.name for f in tmp_path.iterdir()) == ['long.tum']


def test_evaluate_reports_screen_metrics_first_in_the_view_asked(take, tmp_path):
    out = tmp_path / 'wide.json'
    assert camstab('evaluate', '--truth', take / 'truth.tum', '--methods', 'passthrough',
                   '--json', out, take / 'noisy.tum').returncode == 0
    tele = tmp_path / 'tele.json'
    result = camstab('evaluate', '--truth', take / 'truth.tum', '--methods', 'passthrough',
                     '--fov-deg', '10', '--json', tele, take / 'noisy.tum')
    assert result.returncode == 0, result.stderr
    header = next(line for line in result.stdout.splitlines() if line.startswith('method'))
    assert header.split()[1] == 'screen_rmse_px'
    assert result.stdout.startswith('tracker noise (white, high-frequency part): ')
    wide_px = json.loads(out.read_text())['passthrough']['screen_rmse_px']
    tele_px = json.loads(tele.read_text())['passthrough']['screen_rmse_px']
    assert tele_px > 3.0 * wide_px
    result = camstab('evaluate', '--truth', take / 'truth.tum', '--fov-deg', '0',
                     take / 'noisy.tum')
    assert result.returncode == 2 and 'fov_deg' in result.stderr


@pytest.mark.parametrize('args, message', [
    (('simulate', '--seconds', '1e9'), 'needs about'),
    (('simulate', '--seconds', 86400, '--rate', 240), 'half of this machine'),
    (('simulate', '--noise', 'loud'), 'available: none, quiet_optical'),
    (('bench', '--ros', '--seconds', '1e9'), 'need 0 < --seconds <= 86400'),
    (('bench', '--bridge', '--seconds', 0), 'need 0 < --seconds <= 86400'),
    (('bench', '--ros', '--seconds', 80000), 'needs about'),
    (('bench', '--ros', '--method', 'nope'), "unknown method 'nope'"),
    (('bench', '--bridge', '--method', 'rts'), 'not causal'),
])
def test_bad_simulate_and_bench_input_exits_2_before_any_work(tmp_path, args, message):
    result = camstab(*args, *(('--out', tmp_path / 'take') if args[0] == 'simulate' else ()))
    assert result.returncode == 2
    assert message in result.stderr and 'Traceback' not in result.stderr
    assert not (tmp_path / 'take').exists()


@pytest.mark.parametrize('unit, scale', [('ms', 1e3), ('ns', 1e9)])
def test_stamps_in_another_unit_are_refused_or_taken_with_time_unit(tmp_path, unit, scale):
    assert camstab('simulate', '--scenario', 'dolly', '--seconds', 5, '--rate', 50,
                   '--out', tmp_path).returncode == 0
    for name in ('noisy', 'truth'):
        lines = (tmp_path / f'{name}.tum').read_text().splitlines()
        rows = [line.split() for line in lines if not line.startswith('#')]
        (tmp_path / f'{name}_{unit}.tum').write_text(''.join(
            f'{float(r[0]) * scale:.0f} ' + ' '.join(r[1:]) + '\n' for r in rows))
    noisy, out = tmp_path / f'noisy_{unit}.tum', tmp_path / 'out.tum'
    refused = camstab('smooth', noisy, out)
    assert refused.returncode == 2 and '--time-unit' in refused.stderr
    assert 'median time step' in refused.stderr and not out.exists()
    taken = camstab('smooth', '--time-unit', unit, noisy, out)
    assert taken.returncode == 0, taken.stderr
    assert 'resets' not in taken.stdout
    stamps = [float(line.split()[0]) for line in out.read_text().splitlines()
              if not line.startswith('#')]
    assert stamps[:3] == [float(line.split()[0])
                          for line in noisy.read_text().splitlines()[:3]]
    evaluated = camstab('evaluate', '--time-unit', unit, '--methods', 'kalman', '--truth',
                        tmp_path / f'truth_{unit}.tum', noisy)
    assert evaluated.returncode == 0, evaluated.stderr


def test_the_demo_shades_the_stillest_second_after_the_warm_up():
    from camstab_ros.tools.demo import stillest_window
    t = np.arange(0.0, 5.0, 0.01)
    p = np.zeros((len(t), 3))
    p[:, 0] = np.where(t < 1.0, 0.0, 0.01 * (t - 1.0) + 0.1 * np.maximum(t - 3.5, 0.0))
    assert stillest_window(t, p, 1.0) == (0.0, 1.0)
    lo, hi = stillest_window(t, p, 1.0, skip_s=1.0)
    assert 1.0 <= lo and hi <= 3.5 + 1e-9


@pytest.mark.parametrize('args, message', [
    (('demo', '--method', 'kalmann'), "unknown method 'kalmann'"),
    (('demo', '--method', 'rts'), 'not causal'),
    (('demo', '--scenario', 'nope'), 'valid scenarios: locked_off'),
    (('demo', '--params-file', 'no/such.yaml'), 'parameter file no/such.yaml not found'),
])
def test_bad_demo_input_exits_2_before_any_node_starts(tmp_path, args, message):
    result = camstab(*args, '--out', tmp_path / 'demo')
    assert result.returncode == 2 and message in result.stderr
    assert not (tmp_path / 'demo').exists()


def test_methods_prints_ranges_readably():
    result = camstab('methods')
    assert result.returncode == 0
    assert 'None' not in result.stdout and '0000000' not in result.stdout
    assert '(1e-12 .. 1e+12 m^2/s^3' in result.stdout


def test_json_outputs_are_valid_json_with_null_for_missing_figures(tmp_path):
    from camstab_ros.tools.common import write_json
    path = tmp_path / 'm.json'
    write_json(path, {'a': float('nan'), 'b': [np.float64(np.inf), 1.5], 'c': (np.float32(2),)})
    text = path.read_text()
    assert 'NaN' not in text and 'Infinity' not in text
    assert json.loads(text) == {'a': None, 'b': [None, 1.5], 'c': [2.0]}


def test_recording_onto_an_existing_bag_exits_2_at_once(tmp_path):
    (tmp_path / 'take1').mkdir()
    started = time.monotonic()
    result = camstab('bag', 'record', '--topics', '/x', '--out', tmp_path / 'take1')
    assert result.returncode == 2 and 'already exists' in result.stderr
    assert time.monotonic() - started < 4.0  # no wait for a publisher first


def test_animate_writes_the_audience_view_with_one_frame_per_tick(tmp_path):
    from PIL import Image
    assert camstab('simulate', '--scenario', 'dolly', '--seconds', 4, '--rate', 60,
                   '--out', tmp_path).returncode == 0
    gif = tmp_path / 'audience.gif'
    result = camstab('animate', tmp_path / 'truth.tum', tmp_path / 'noisy.tum', '--out', gif,
                     '--seconds', 2, '--fps', 10)
    assert result.returncode == 0, result.stderr
    with Image.open(gif) as image:
        assert image.n_frames == 20 and image.size == (720, 400)
    assert camstab('animate', tmp_path / 'truth.tum', tmp_path / 'noisy.tum', '--out', gif,
                   '--fps', 0).returncode == 2

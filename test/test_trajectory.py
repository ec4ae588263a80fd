from camstab_ros.io.trajectory import read_trajectory, TrajectoryError, write_trajectory
from helpers import moving_take, shared_file
import numpy as np
import pytest


@pytest.mark.parametrize('suffix', ['.tum', '.txt', '.csv'])
def test_round_trip_keeps_every_value(tmp_path, suffix):
    t, _, _, p, q = moving_take(100)
    path = tmp_path / f'take{suffix}'
    write_trajectory(path, t + 1.7e9, p, q, comment='test')
    back = read_trajectory(path)
    np.testing.assert_allclose(back.t, t + 1.7e9, atol=1e-6)
    np.testing.assert_allclose(back.p, p, atol=1e-9)
    np.testing.assert_allclose(back.q, q, atol=1e-9)


def test_reads_the_real_tum_groundtruth_with_comments():
    traj = read_trajectory(shared_file('real/tum_fr1_xyz_groundtruth.txt'))
    assert len(traj) > 2500
    assert traj.t[0] == pytest.approx(1305031098.6659)
    np.testing.assert_allclose(traj.p[0], [1.3563, 0.6305, 1.6380])


@pytest.mark.parametrize('content, message', [
    ('', 'no poses'),
    ('# only a comment\n', 'no poses'),
    ('0 1 2 3 0 0 0 1\n1 1 2 3 0 0 1\n', r':2: expected 8 columns .* found 7'),
    ('0 1 2 3 0 0 0 1\n1 1 2 x 0 0 0 1\n', r':2: not a number'),
])
def test_malformed_tum_files_name_the_file_and_line(tmp_path, content, message):
    path = tmp_path / 'bad.tum'
    path.write_text(content)
    with pytest.raises(TrajectoryError, match=message):
        read_trajectory(path)


def test_csv_needs_its_header_and_nan_values_are_read_for_validation(tmp_path):
    path = tmp_path / 'bad.csv'
    path.write_text('time,x,y,z,qx,qy,qz,qw\n0,0,0,0,0,0,0,1\n')
    with pytest.raises(TrajectoryError, match='expected the header t,x,y,z,qx,qy,qz,qw'):
        read_trajectory(path)
    path.write_text('t,x,y,z,qx,qy,qz,qw\n0,nan,0,0,0,0,0,1\n')
    assert np.isnan(read_trajectory(path).p[0, 0])


def test_unknown_extension_missing_and_binary_files(tmp_path):
    with pytest.raises(TrajectoryError, match="unknown trajectory format '.bin'"):
        read_trajectory(tmp_path / 'x.bin')
    with pytest.raises(TrajectoryError, match='cannot read'):
        read_trajectory(tmp_path / 'missing.tum')
    (tmp_path / 'bin.tum').write_bytes(b'\xff\xfe\x00\x81')
    with pytest.raises(TrajectoryError, match='not a text file'):
        read_trajectory(tmp_path / 'bin.tum')


def test_a_failed_write_leaves_no_partial_file(tmp_path):
    path = tmp_path / 'out.tum'
    with pytest.raises(ValueError):
        write_trajectory(path, np.zeros(3), np.zeros((3, 3)), np.zeros((2, 4)))
    assert list(tmp_path.iterdir()) == []

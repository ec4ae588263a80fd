"""
Splits of the data: tuning and training never see what the results are reported on.

Synthetic takes: every take is `simulate(scenario, seconds, rate_hz, seed, noise)`; the
seed decides the split. The classical tuning (tune_classical.py) and the learned models'
training and validation use the training and validation seeds; evaluate.py and the
tracker matrix report on the test seeds only.

Real recorded motion (../shared/data/real): the learned models train on REAL_TRAIN_TAKES
and are selected on REAL_VALIDATION_TAKES (their validation takes and the validation
matrix, `training.matrix --split validation`); the classical baselines are optimised on
both (tune_classical.py --real: the same real motion the learned models' development saw).
REAL_TEST_TAKES are held out of all training, tuning and model selection, and are the
real motion of the tracker matrix (training/matrix.py).
"""
TRAIN_SEEDS = range(1000, 9000)
VALIDATION_SEEDS = range(50000, 51000)
TEST_SEEDS = range(900000, 901000)
REAL_TRAIN_TAKES = ('tumvi_room3_groundtruth.txt',)
REAL_VALIDATION_TAKES = ('tumvi_room5_groundtruth.txt',)
REAL_TEST_TAKES = ('tumvi_room6_groundtruth.txt', 'tum_fr1_xyz_groundtruth.txt')

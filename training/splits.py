"""
Seed splits of the synthetic data: tuning and training never see the test split.

Every synthetic take is `simulate(scenario, seconds, rate_hz, seed, noise)`; the seed
decides the split. The classical tuning (tune_classical.py) and the learned models'
training and validation use the training and validation seeds; evaluate.py reports on the
test seeds only.
"""
TRAIN_SEEDS = range(1000, 9000)
VALIDATION_SEEDS = range(50000, 51000)
TEST_SEEDS = range(900000, 901000)

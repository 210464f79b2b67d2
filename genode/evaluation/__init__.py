"""Evaluation from checkpoints: Fréchet distances (Inception-v3 FID, small-data feature
networks), 2-D toy metrics, NLL in bits/dim, reports. Entry point: `evaluate_workdir`.
"""

from genode.evaluation.evaluate import METRICS as METRICS
from genode.evaluation.evaluate import evaluate_experiment as evaluate_experiment
from genode.evaluation.evaluate import evaluate_workdir as evaluate_workdir
from genode.evaluation.frechet import FeatureStats as FeatureStats
from genode.evaluation.frechet import feature_stats as feature_stats
from genode.evaluation.frechet import frechet_distance as frechet_distance
from genode.evaluation.frechet import frechet_distance_from_features as frechet_distance_from_features
from genode.evaluation.toy_metrics import mmd_squared as mmd_squared
from genode.evaluation.toy_metrics import sliced_wasserstein as sliced_wasserstein

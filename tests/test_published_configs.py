"""The published CIFAR-10 configs: each builds its full-size network (exact parameter count, no allocation),
carries the paper's hyper-parameters and targets, and its smoke variant trains 2 steps and samples."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gl_jax.eval.sample import sample
from gl_jax.families.build import build_score
from gl_jax.published_configs import SCORE_SDE_ROWS
from gl_jax.spec import DataSpec
from gl_jax.train.loop import train_and_evaluate
from tests.conftest import REPO, load_config

CIFAR10 = DataSpec("cifar10", "image", (32, 32, 3), 256, 10, {"train": 50_000, "test": 10_000})
CONFIGS = sorted(p.stem for p in (REPO / "experiments").glob("cifar10_*.py"))

# Parameters of each config's full-size network, counted once (jax.eval_shape) and pinned; the networks'
# own tests check these counts against the papers' figures (DDPM CIFAR-10: 35,746,307).
PARAMETER_COUNTS = {
    "cifar10_subvp_ddpm_continuous": 35_746_307,
    "cifar10_subvp_ddpmpp_continuous": 61_804_419,
    "cifar10_subvp_ddpmpp_deep_continuous": 106_632_579,
    "cifar10_ve_ncsnpp": 62_758_915,
    "cifar10_ve_ncsnpp_continuous": 62_758_915,
    "cifar10_ve_ncsnpp_deep_continuous": 107_587_075,
    "cifar10_vp_ddpm": 35_746_307,
    "cifar10_vp_ddpm_continuous": 35_746_307,
    "cifar10_vp_ddpmpp": 61_804_419,  # score_sde's DDPM++: 61.80M (Karras et al. 2022, table 7).
    "cifar10_vp_ddpmpp_continuous": 61_804_419,
    "cifar10_vp_ddpmpp_deep_continuous": 106_632_579,
    "cifar10_edm_vp": 55_732_739,  # EDM's DDPM++: 55.73M (Karras et al. 2022, table 7).
    "cifar10_edm_ve": 56_395_651,
    "cifar10_edm_vp_cond": 55_738_371,  # + the label table (11 x 512).
}


def _count(config) -> int:
    family = build_score(config, CIFAR10)
    shapes = jax.eval_shape(family.init, jax.random.key(0))
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))


def test_one_config_per_published_row():
    rows = {name.removeprefix("cifar10_") for name in CONFIGS}
    expected = {row.replace("/", "_") for row in SCORE_SDE_ROWS} | {"edm_vp", "edm_ve", "edm_vp_cond"}
    assert rows == expected


@pytest.mark.parametrize("name", CONFIGS)
def test_full_size_config_builds_with_published_settings(name):
    config = load_config(name)
    assert config.data.name == "cifar10" and config.data.flip
    assert config.targets and all(v > 0 for v in config.targets.values())
    count = _count(config)
    assert count == PARAMETER_COUNTS[name]
    if "_ddpm" in name and "ddpmpp" not in name:
        assert count == 35_746_307  # Ho et al. 2020's 35.7M.
    if "edm" in name:
        assert config.loss.weighting == "edm" and config.sample.sampler == "edm" and config.sample.steps == 18
    else:
        assert config.optim.lr == 2e-4 and config.optim.warmup_steps == 5000 and config.data.batch_size == 128
        assert config.train.ema_decay == (0.999 if name.startswith("cifar10_ve") else 0.9999)


# Each smoke run compiles a 32x32 U-Net's train step and a sampler (30-60 s here), so all are marked slow
# (`pytest -m slow`); their networks, losses and samplers have unit tests of their own, and the default
# run trains class-conditional diffusion through digits_vp_cond (tests/eval/test_usefulness.py).
FAST: set[str] = set()


@pytest.mark.parametrize(
    "name", [n if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in CONFIGS]
)
def test_smoke_variant_trains_two_steps_and_samples(name, tmp_path, data_dir):
    config = load_config(name, "smoke")
    config.data.data_dir = data_dir
    state = train_and_evaluate(config, str(tmp_path))
    assert int(state.step) == 2
    x = sample(config, str(tmp_path))
    assert x.shape == (config.sample.num_samples, 32, 32, 3) and np.all(np.isfinite(x))
    assert float(jnp.std(x)) > 0

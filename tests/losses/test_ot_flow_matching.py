"""Flow matching with minibatch OT couplings against independent couplings on the 2-D ring of Gaussians
(Tong et al. 2023, OT-CFM, tables 2-3; Pooladian et al. 2023): at the same training budget, the OT-trained
flow's 5-step Euler samples are closer to the data (sliced Wasserstein) and its paths are straighter
(Liu et al. 2023, "Flow straight and fast", def. 2)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gl_jax.data.toy import ring_mixture
from gl_jax.eval.wasserstein import sliced_wasserstein
from gl_jax.families.build import build_score
from gl_jax.samplers import ddim, time_grid
from gl_jax.spec import DataSpec
from gl_jax.train.state import TrainState
from gl_jax.train.step import make_train_step
from tests.conftest import load_config

STEPS, BATCH = 1000, 256
SPEC = DataSpec("toy/gmm_2d", "vector", (2,), None, None, {"train": 20_000, "test": 5_000})


def _family(coupling: str):
    config = load_config("toy_flow", "" if coupling == "ot" else "independent")
    config.model.features = (128, 128, 128)
    return build_score(config, SPEC)


def _train(coupling: str):
    """The toy_flow recipe's model, trained `STEPS` steps on fresh ring samples (same data, same keys)."""
    family = _family(coupling)
    schedule = optax.warmup_cosine_decay_schedule(0.0, 1e-3, 100, STEPS, 5e-5)
    state = TrainState.create(params=family.init(jax.random.key(0)), tx=optax.adam(schedule))
    step = jax.jit(make_train_step(family.loss, ema_decay=0.99, ema_warmup=True))
    data = ring_mixture().sample_numpy(np.random.default_rng(0), STEPS * BATCH).astype(np.float32)
    data = data.reshape(STEPS // 50, 50, BATCH, 2)

    @jax.jit
    def fifty(state, chunk):
        return jax.lax.scan(lambda s, x: (step(s, {"x": x}, jax.random.key(1))[0], None), state, chunk)[0]

    for chunk in data:
        state = fifty(state, chunk)
    return family, state.ema_params


@pytest.fixture(scope="module")
def trained():
    return {coupling: _train(coupling) for coupling in ("ot", "independent")}


def _euler_path(family, params, x, steps):
    """Euler on the probability-flow ODE dx/dt = f x - g^2 / 2 score from T to t_min: `[steps + 1, N, 2]`."""
    score = family.score_fn(params)
    ts = time_grid(family.sde, steps)

    def step(x, i):
        t = jnp.full((x.shape[0],), ts[i])
        x = x + (ts[i + 1] - ts[i]) * family.sde.reverse_drift(x, t, score(x, t), probability_flow=True)
        return x, x

    _, xs = jax.lax.scan(step, x, jnp.arange(steps))
    return jnp.concatenate([x[None], xs]), ts


def straightness(family, params, x, *, steps=100):
    """Liu et al. 2023, def. 2: E int ||(Z_1 - Z_0) - dZ_t/dt||^2 dt over the learned ODE's paths, relative
    to E ||Z_1 - Z_0||^2 (0 for straight paths), by a fine Euler solve."""
    path, ts = _euler_path(family, params, x, steps)
    dt = jnp.diff(ts)  # [steps], negative
    velocity = jnp.diff(path, axis=0) / dt[:, None, None]  # [steps, N, 2]
    chord = (path[-1] - path[0]) / (ts[-1] - ts[0])  # [N, 2]
    deviation = jnp.sum(jnp.abs(dt)[:, None] * jnp.sum((velocity - chord) ** 2, -1), 0)  # [N]
    return float(jnp.mean(deviation) / (jnp.abs(ts[-1] - ts[0]) * jnp.mean(jnp.sum(chord**2, -1))))


@pytest.mark.slow
def test_ddim_on_the_rectified_flow_is_five_step_euler(trained):
    family, params = trained["ot"]
    x1 = jax.random.normal(jax.random.key(3), (512, 2))
    via_ddim = ddim(jax.random.key(0), family.score_fn(params), family.sde, (512, 2), steps=5, x_init=x1).x
    path, _ = _euler_path(family, params, x1, 5)
    chex.assert_trees_all_close(via_ddim, path[-1], atol=2e-4)


@pytest.mark.slow  # ~1 min on 2 cores: two 1,000-step trainings; run with -m slow.
def test_ot_coupling_gives_better_five_step_samples_and_straighter_paths(trained):
    N = 20_000  # The mode weights of fewer data samples fluctuate enough to hide the difference.
    data = ring_mixture().sample_numpy(np.random.default_rng(7), N)
    noise = jax.random.normal(jax.random.key(11), (N, 2))
    sw, straight = {}, {}
    for coupling, (family, params) in trained.items():
        samples = ddim(
            jax.random.key(0), family.score_fn(params), family.sde, (N, 2), steps=5, x_init=noise
        ).x
        sw[coupling] = sliced_wasserstein(jax.random.key(5), np.asarray(samples), data, num_projections=512)
        straight[coupling] = straightness(family, params, noise[:1000])
    # A floor for both: twice the distance between two fresh data samples of this size.
    floor = sliced_wasserstein(
        jax.random.key(5),
        ring_mixture().sample_numpy(np.random.default_rng(8), N),
        data,
        num_projections=512,
    )
    print(f"SW_2 of 5-step Euler samples: {sw}; data vs data {floor:.4f}; straightness: {straight}")
    assert sw["ot"] < 0.8 * sw["independent"], sw
    assert straight["ot"] < 0.5 * straight["independent"], straight
    assert sw["ot"] > floor  # The measurement can resolve the difference above sampling noise.

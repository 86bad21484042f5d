"""Every family trains through the one shared step: the loop builds it with `make_train_step(family.loss)`
and compiles it with `parallel.compile_train_step`; no family module has step code of its own; each new
experiment config's smoke variant trains, checkpoints and samples through `train_and_evaluate`; every family
computes the same losses on 1 device and on a 4-device mesh.

The GAN smoke test also checks that the loop builds the optimizer with the family's hook
(`Family.optimizer(base)`).
"""

import ast
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import gl_jax.families
from gl_jax.eval.sample import sample
from gl_jax.families.gan import GAN
from gl_jax.train import loop, parallel, step
from gl_jax.train.loop import train_and_evaluate
from tests.conftest import REPO, load_config

needs_fashion = pytest.mark.skipif(
    not os.path.exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"),
    reason="needs Debian's dataset-fashion-mnist",
)
FAMILY_MODULES = ("gan", "vae", "autoregressive", "latent", "diffusion")


def test_no_family_module_has_step_code():
    """Families give a loss; gradients, updates and compilation belong to gl_jax.train alone."""
    assert loop.make_train_step is step.make_train_step
    folder = pathlib.Path(gl_jax.families.__file__).parent
    for name in FAMILY_MODULES:
        tree = ast.parse((folder / f"{name}.py").read_text())
        names = {
            n.attr if isinstance(n, ast.Attribute) else n.id
            for n in ast.walk(tree)
            if isinstance(n, ast.Attribute | ast.Name)
        }
        imports = {
            a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom | ast.Import) for a in n.names
        }
        for forbidden in (
            "value_and_grad",
            "apply_updates",
            "make_train_step",
            "compile_train_step",
            "pmap",
            "jit",
        ):
            assert forbidden not in names | imports, f"{name}.py uses {forbidden}"
        functions = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        own = functions & {"train_step", "update_step", "make_step", "apply_gradients"}
        assert not own, f"{name}.py defines {own}"


@pytest.fixture
def shared_step_spy(monkeypatch):
    """Records the loss the loop gives `make_train_step` and the step it compiles."""
    calls = {"make": [], "compile": [], "optimizer": []}
    real_make, real_compile = step.make_train_step, parallel.compile_train_step

    def make(loss_fn, **kwargs):
        fn = real_make(loss_fn, **kwargs)
        calls["make"].append((loss_fn, fn))
        return fn

    def compile_(train_step, mesh, **kwargs):
        calls["compile"].append(train_step)
        return real_compile(train_step, mesh, **kwargs)

    real_optimizer = GAN.optimizer

    def optimizer(self, base):
        calls["optimizer"].append(self)
        return real_optimizer(self, base)

    monkeypatch.setattr(loop, "make_train_step", make)
    monkeypatch.setattr(parallel, "compile_train_step", compile_)
    monkeypatch.setattr(GAN, "optimizer", optimizer)
    return calls


def _check_run(config, workdir, calls, family_cls):
    state = train_and_evaluate(config, str(workdir))
    assert int(state.step) == config.train.num_steps
    # The loop built the shared step from this family's loss and compiled exactly that step.
    ((loss_fn, built),) = calls["make"]
    assert loss_fn.__func__ is family_cls.loss
    assert calls["compile"] == [built]
    records = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    losses = [r["train/loss"] for r in records if "train/loss" in r]
    assert losses and all(np.isfinite(losses))
    assert (workdir / "samples" / f"step_{config.train.num_steps:07d}.png").exists()
    samples = sample(config, str(workdir))
    assert samples.shape[0] == config.sample.num_samples and np.all(np.isfinite(samples))
    assert np.all(np.abs(samples) <= 1.0)
    return state


def _family_cls(name):
    from gl_jax.families.autoregressive import Autoregressive
    from gl_jax.families.latent import LatentDiffusion
    from gl_jax.families.vae import VAE

    kind = name.rsplit("_", 1)[1]
    return {"gan": GAN, "vae": VAE, "ar": Autoregressive, "latent": LatentDiffusion}[kind]


@pytest.fixture(scope="module")
def vae_smoke_run(tmp_path_factory, data_dir):
    """digits_vae:smoke trained through the loop; its workdir (the latent smoke test reads its checkpoint)."""
    workdir = tmp_path_factory.mktemp("digits_vae_smoke")
    config = load_config("digits_vae", "smoke")
    config.data.data_dir = data_dir
    train_and_evaluate(config, str(workdir))
    return workdir


slow = pytest.mark.slow


@pytest.mark.parametrize(
    "name",
    [
        "digits_ar",  # The cheapest to compile: the one loop run of the default test selection.
        pytest.param("digits_vae", marks=slow),
        pytest.param("digits_latent", marks=slow),
        pytest.param("fashion_mnist_gan", marks=[slow, needs_fashion]),
        pytest.param("fashion_mnist_vae", marks=[slow, needs_fashion]),
        pytest.param("fashion_mnist_ar", marks=[slow, needs_fashion]),
        pytest.param("fashion_mnist_latent", marks=[slow, needs_fashion]),
    ],
)
def test_smoke_variant_trains_and_samples(name, tmp_path, data_dir, shared_step_spy, request):
    config = load_config(name, "smoke")
    config.data.data_dir = data_dir
    if name == "digits_latent":
        # A VAE trained by the loop, not a random one.
        config.latent.vae_checkpoint = str(request.getfixturevalue("vae_smoke_run"))
        config.latent.allow_random_vae = False
        for calls in shared_step_spy.values():
            calls.clear()  # Forget the VAE run's calls.
    _check_run(config, tmp_path, shared_step_spy, _family_cls(name))


def test_digits_gan_smoke_trains_with_its_own_optimizer(tmp_path, data_dir, shared_step_spy):
    """Needs the loop to build its optimizer with `family.optimizer(base)`."""
    config = load_config("digits_gan", "smoke")
    config.data.data_dir = data_dir
    state = _check_run(config, tmp_path, shared_step_spy, GAN)
    assert shared_step_spy["optimizer"], "the loop did not ask the family for its optimizer"
    assert set(state.params) == {"generator", "discriminator"}


def test_all_new_configs_load():
    for family in ("gan", "vae", "ar", "latent"):
        for data in ("digits", "fashion_mnist"):
            for variant in ("", "smoke"):
                config = load_config(f"{data}_{family}", variant)
                assert config.train.num_steps % config.train.steps_per_call == 0
            with pytest.raises(ValueError, match="Unknown variant"):
                load_config(f"{data}_{family}", "huge")


@pytest.mark.slow
def test_losses_equal_on_1_device_and_a_4_device_mesh():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.families._three_steps"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT", 1)[1])
    for name in ("gan", "vae", "autoregressive", "latent"):
        one = out[f"{name}/jit_1"]
        assert len(one) == 3 and one[0] != one[2], name  # The steps do something ...
        for layout in ("jit_4", "fsdp_4"):  # ... the same on 4 devices, state replicated or sharded.
            np.testing.assert_allclose(out[f"{name}/{layout}"], one, rtol=1e-5, atol=1e-5, err_msg=name)
            np.testing.assert_allclose(
                out[f"{name}/{layout}/param_sum"], out[f"{name}/jit_1/param_sum"], rtol=1e-5
            )

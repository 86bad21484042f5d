"""The config edge of the families: config sections in, typed options and built families out.

Each `build_<family>(config, spec, *, load_params)` reads the config sections its family uses, checks
every key (naming its config path and the nearest valid key), builds the networks through the model
registry, and hands the family typed options and objects only; families never see a config. The table of
families, `gl_jax.families.FAMILIES`, maps `config.family` to these functions.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import ml_collections

from gl_jax.families.autoregressive import BYTE_VOCAB, AROptions, Autoregressive
from gl_jax.families.base import Sampler
from gl_jax.families.consistency import ConsistencyModel, ConsistencyOptions
from gl_jax.families.diffusion import NOISE_CONDITIONS, ScoreDiffusion
from gl_jax.families.gan import GAN, GANOptions
from gl_jax.families.latent import LatentDiffusion, LatentOptions
from gl_jax.families.progressive import ProgressiveDistillation, ProgressiveOptions
from gl_jax.families.vae import VAE, VAEOptions, params_per_channel
from gl_jax.losses.coupling import COUPLINGS
from gl_jax.losses.score import TIME_SAMPLINGS, WEIGHTINGS
from gl_jax.losses.weightings import UncertaintyWeight
from gl_jax.models.registry import AR_MODELS, GAN_MODELS, MODELS, VAE_MODELS
from gl_jax.parametrization import PREDICTIONS
from gl_jax.registry import Registry, check_keys, init_fields, plain
from gl_jax.samplers import SAMPLERS, THRESHOLDS
from gl_jax.sde import EDMSDE, VESDE, VPSDE, DiscreteDDPM, RectifiedFlow, SubVPSDE
from gl_jax.spec import DataSpec

__all__ = [
    "SDES",
    "bind_sampler",
    "check_threshold",
    "typed_options",
    "options_from_config",
    "build_score",
    "build_gan",
    "build_vae",
    "build_autoregressive",
    "build_latent",
    "LatentSource",
    "vae_from_options",
    "ParamsLoader",
    "build_consistency",
    "build_progressive",
    "TeacherSource",
]

T = TypeVar("T")

# Reads a finished run's parameters: `load(path, target, *, step, use_ema) -> params` shaped like `target`
# (`gl_jax.train.saved_params.load_params`).
ParamsLoader = Callable[..., Any]

SDES = Registry(
    "SDE",
    {
        "vp": VPSDE,
        "subvp": SubVPSDE,
        "ve": VESDE,
        "edm": EDMSDE,
        "rectified_flow": RectifiedFlow,
        "ddpm": DiscreteDDPM,
    },
)


def typed_options(cls: type[T], options: Mapping[str, Any], *, where: str) -> T:
    """`cls(**options)` for a dataclass `cls`, naming an unknown key (at `where`) and the nearest one.

    Mappings become sorted `(key, value)` pairs and lists tuples, so the options are hashable.
    """
    options = plain(options)
    check_keys(options, init_fields(cls), where=where, what=cls.__name__)
    options = {k: tuple(sorted(v.items())) if isinstance(v, dict) else v for k, v in options.items()}
    try:
        return cls(**options)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def options_from_config(cls: type[T], config: ml_collections.ConfigDict, section: str) -> T:
    """`typed_options(cls, config[section])`; the section is one an experiment file creates.

    Raises:
      ValueError: the section is missing or has a key `cls` does not know.
    """
    if section not in config:
        raise ValueError(
            f"config.{section} is missing: family {config.family!r} reads its options from it "
            f"(valid keys: {sorted(init_fields(cls))}); see the experiments/*_{section}.py files."
        )
    return typed_options(cls, config[section], where=f"config.{section}")


def _from_section(registry: Registry, section: Any, *, where: str = "config.model", **fixed: Any) -> Any:
    """`registry.build(section.name, the section's other options)`: a config section naming its builder."""
    options = dict(plain(section))
    return registry.build(options.pop("name", None), options, where=where, **fixed)


def _require_images(spec: DataSpec, family: str) -> None:
    if spec.kind != "image":
        raise ValueError(f"The {family} family models images; dataset {spec.name!r} has {spec.kind} data.")


def bind_sampler(
    name: str, *, steps: int, options: Mapping[str, Any], where: str, name_at: str | None = None
) -> Sampler:
    """`SAMPLERS[name]` with `steps` and its keyword `options` bound, every option checked.

    Args:
      name: a key of `gl_jax.samplers.SAMPLERS`.
      steps: the sampler's `steps`.
      options: its other keyword options.
      where: the options' config path, for messages.
      name_at: the sampler name's config path, for messages.
    """
    options = dict(plain(options))
    SAMPLERS.check_options(name, options, where=where, name_at=name_at)
    return functools.partial(SAMPLERS[name], steps=steps, **options)


def check_threshold(threshold: str, spec: DataSpec, *, where: str) -> None:
    """A thresholding method that exists (`gl_jax.samplers.THRESHOLDS`), and none but "none" for data
    that are not images (thresholding keeps the denoised estimate in the image range [-1, 1])."""
    THRESHOLDS.lookup(threshold, where=where)
    if threshold != "none" and spec.kind != "image":
        raise ValueError(
            f"{where}={threshold!r} keeps samples in the image range [-1, 1]; dataset {spec.name!r} is not "
            f"images, so set {where}='none'."
        )


def _read_run(
    load_params: ParamsLoader | None,
    init: Callable[[jax.Array], Any],
    path: str,
    *,
    step: int,
    use_ema: bool,
    where: str,
    missing: str,
    mismatch: str,
) -> Any:
    """Another run's parameters, shaped like `init`'s, with one-line errors naming the config key.

    Args:
      load_params: the reader (`gl_jax.train.saved_params.load_params`).
      init: the parameters' initialiser, for their expected shapes.
      path, step, use_ema: which run, checkpoint and copy to read.
      where: the config key that names the run, for messages.
      missing: the fix when no checkpoint is there; mismatch: the fix when its shapes differ.
    """
    if load_params is None:
        raise ValueError(f"{where} is set but no parameter loader was given.")
    target = jax.eval_shape(init, jax.random.key(0))
    try:
        return load_params(path, target, step=step, use_ema=use_ema)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{e} {where} must name {missing}") from None
    except ValueError as e:
        raise ValueError(f"{e} {mismatch}") from None


def build_score(
    config: ml_collections.ConfigDict, spec: DataSpec, *, load_params: ParamsLoader | None = None
):
    """Score-based diffusion (`config.model`, `config.sde`, `config.loss`, `config.sample`).

    Args:
      config: the experiment config.
      spec: the dataset.
      load_params: reads the autoguidance guide's parameters (`config.sample.guide_checkpoint`).
    """
    model = _from_section(MODELS, config.model)
    sde = _from_section(SDES, config.sde, where="config.sde")
    sample = config.sample
    loss = config.loss
    sampler = bind_sampler(
        sample.sampler, steps=sample.steps, options=sample.options, where="config.sample.options"
    )
    check_threshold(sample.threshold, spec, where="config.sample.threshold")
    PREDICTIONS.lookup(loss.prediction, where="config.loss.prediction")
    NOISE_CONDITIONS.lookup(loss.noise_cond, where="config.loss.noise_cond")
    # Configs saved before an option existed lack its key: the default then, as they trained.
    uncertainty = None
    if loss.get("uncertainty", False):
        uncertainty = typed_options(
            UncertaintyWeight,
            loss.get("uncertainty_options", None) or {},
            where="config.loss.uncertainty_options",
        )
    family = ScoreDiffusion(
        model=model,
        sde=sde,
        data_shape=tuple(spec.shape),
        prediction=loss.prediction,
        noise_cond=loss.noise_cond,
        guidance=sample.guidance,
        guidance_interval=tuple(float(v) for v in sample.get("guidance_interval", ())) or None,
        weighting=WEIGHTINGS.build(
            loss.weighting,
            loss.get("weighting_options", None),
            where="config.loss.weighting_options",
            name_at="config.loss.weighting",
        ),
        time_sampling=TIME_SAMPLINGS.build(
            loss.time_sampling,
            loss.get("time_sampling_options", None),
            where="config.loss.time_sampling_options",
            name_at="config.loss.time_sampling",
        ),
        reduce=loss.reduce,
        uncertainty=uncertainty,
        coupling=COUPLINGS.build(
            loss.get("coupling", "independent"),
            loss.get("coupling_options", None),
            where="config.loss.coupling_options",
            name_at="config.loss.coupling",
        ),
        sampler=sampler,
        threshold=sample.threshold,
        pixel_levels=spec.levels if spec.kind == "image" else None,
    )
    if family.num_classes and spec.num_classes is None:
        raise ValueError(
            f"config.model asks for {family.num_classes} classes but dataset {spec.name!r} has no labels; "
            "set config.model.num_classes=0."
        )
    if sample.get("guide_checkpoint", ""):
        family = _with_guide(family, sample, load_params)
    return family


def _with_guide(family: ScoreDiffusion, sample: ml_collections.ConfigDict, load_params: ParamsLoader | None):
    """`family` autoguided by the run at `config.sample.guide_checkpoint` (its `guide_model`, else the same
    network), read at `guide_step`."""
    if family.guidance != 1.0:
        raise ValueError(
            f"config.sample.guidance={family.guidance} and config.sample.guide_checkpoint both guide the "
            "model; use one (set config.sample.guidance=1.0 for autoguidance)."
        )
    guide_model = family.model
    if sample.guide_model:
        guide_model = _from_section(MODELS, sample.guide_model, where="config.sample.guide_model")
    guided = dataclasses.replace(family, guide_model=guide_model, autoguidance=float(sample.guide_weight))
    guide_params = _read_run(
        load_params,
        guided._guide().init,
        sample.guide_checkpoint,
        step=sample.guide_step,
        use_ema=sample.guide_use_ema,
        where="config.sample.guide_checkpoint",
        missing="the workdir of a trained run of this task (this run's own, with config.sample.guide_step at "
        "an early checkpoint, or a smaller one's).",
        mismatch="Set config.sample.guide_model to the config.model of the run that wrote the guide.",
    )
    return dataclasses.replace(guided, guide_params=guide_params)


def build_gan(config: ml_collections.ConfigDict, spec: DataSpec, *, load_params: ParamsLoader | None = None):
    """A GAN (`config.model`, `config.gan`); the players' optimizer options replace `config.optim`'s."""
    del load_params
    options = options_from_config(GANOptions, config, "gan")
    _require_images(spec, "GAN")
    allowed = [k for k in config.optim if k != "grad_accum_steps"]
    for player in ("generator_optim", "discriminator_optim"):
        check_keys(dict(getattr(options, player)), allowed, where=f"config.gan.{player}", what="config.optim")
    model = _from_section(GAN_MODELS, config.model, image_shape=tuple(spec.shape))
    return GAN(model=model, data_shape=tuple(spec.shape), options=options)


def vae_from_options(
    model_options: Any, options: VAEOptions, spec: DataSpec, *, dequantized: bool, where: str = "config.model"
) -> VAE:
    """A VAE from its model section and typed options (the `vae` family, and latent diffusion's autoencoder).

    Args:
      model_options: the model section (`name` and the network's options).
      options: the VAE's options.
      spec: the image dataset.
      dequantized: whether the pipeline dequantizes images (`config.data.dequantize`).
      where: the model section's config path, for messages.
    """
    out = spec.shape[-1] * params_per_channel(options.decoder, options.num_mixtures)
    return VAE(
        model=_from_section(VAE_MODELS, model_options, where=where, out_channels=out),
        data_shape=tuple(spec.shape),
        levels=spec.levels,
        dequantized=dequantized,
        options=options,
    )


def build_vae(config: ml_collections.ConfigDict, spec: DataSpec, *, load_params: ParamsLoader | None = None):
    """A VAE (`config.model`, `config.vae`) over the dataset's integer pixel levels."""
    del load_params
    options = options_from_config(VAEOptions, config, "vae")
    _require_images(spec, "VAE")
    return vae_from_options(
        config.model, options, spec, dequantized=config.data.dequantize, where="config.model"
    )


def build_autoregressive(
    config: ml_collections.ConfigDict, spec: DataSpec, *, load_params: ParamsLoader | None = None
):
    """An autoregressive transformer (`config.model`, `config.ar`) over pixel levels or text bytes."""
    del load_params
    options = options_from_config(AROptions, config, "ar")
    image = spec.kind == "image"
    vocab = options.vocab_size
    if not vocab:
        if image:
            vocab = spec.levels
        elif spec.name.startswith("text/"):
            vocab = BYTE_VOCAB
        else:
            raise ValueError(
                f"Dataset {spec.name!r} holds {spec.kind} data; set config.ar.vocab_size to the number "
                "of token values its examples take (stored as floats 0, 1, ..., vocab_size - 1)."
            )
    if image and vocab != spec.levels:
        raise ValueError(
            f"config.ar.vocab_size={vocab} differs from the {spec.levels} levels of {spec.name!r}."
        )
    length = math.prod(spec.shape)
    return Autoregressive(
        model=_from_section(AR_MODELS, config.model, vocab_size=vocab, max_len=length),
        data_shape=tuple(spec.shape),
        vocab_size=vocab,
        image=image,
        dequantized=config.data.dequantize,
        options=options,
    )


@dataclasses.dataclass(frozen=True)
class LatentSource:
    """`config.latent`: where the autoencoder comes from, and `LatentOptions`.

    Attributes:
      vae_checkpoint: the VAE run's workdir, its `checkpoints` folder, or one step folder in it.
      vae_model: the VAE run's `config.model` (the autoencoder must be rebuilt exactly).
      vae: the VAE run's `config.vae`.
      vae_step: the checkpoint step to read (-1: the latest).
      vae_use_ema: read the EMA parameters (else the raw ones).
      allow_random_vae: with no `vae_checkpoint`, use a randomly initialised VAE (smoke runs only).
      encode, scale: see `LatentOptions`.
    """

    vae_checkpoint: str = ""
    vae_model: tuple = ()
    vae: tuple = ()
    vae_step: int = -1
    vae_use_ema: bool = True
    allow_random_vae: bool = False
    encode: str = "sample"
    scale: float = 1.0


def build_latent(
    config: ml_collections.ConfigDict, spec: DataSpec, *, load_params: ParamsLoader | None = None
):
    """Latent diffusion (`config.latent`, and `config.model`/`sde`/`loss`/`sample` for the diffusion part).

    Args:
      config: the experiment config.
      spec: the image dataset.
      load_params: reads the VAE run's parameters (needed when `config.latent.vae_checkpoint` is set).
    """
    source = options_from_config(LatentSource, config, "latent")
    options = typed_options(
        LatentOptions, {"encode": source.encode, "scale": source.scale}, where="config.latent"
    )
    _require_images(spec, "latent diffusion")
    vae_options = typed_options(VAEOptions, dict(source.vae), where="config.latent.vae")
    vae = vae_from_options(
        dict(source.vae_model),
        vae_options,
        spec,
        dequantized=config.data.dequantize,
        where="config.latent.vae_model",
    )
    if config.sample.threshold != "none":
        raise ValueError(
            f"config.sample.threshold={config.sample.threshold!r}: latents have no [-1, 1] range to keep; "
            "set config.sample.threshold='none'."
        )
    latent_spec = dataclasses.replace(
        spec, name=f"latents of {spec.name}", shape=vae.latent_shape, levels=None, num_classes=None
    )
    if source.vae_checkpoint:
        vae_params = _read_run(
            load_params,
            vae.init,
            source.vae_checkpoint,
            step=source.vae_step,
            use_ema=source.vae_use_ema,
            where="config.latent.vae_checkpoint",
            missing="the workdir of a trained VAE run (train one with the matching experiments/*_vae.py "
            "first).",
            mismatch="Set config.latent.vae_model and config.latent.vae to the config.model and config.vae "
            "of the run that wrote it, or name another step with config.latent.vae_step.",
        )
    elif source.allow_random_vae:
        vae_params = None
    else:
        raise ValueError(
            "config.latent.vae_checkpoint is empty: name the workdir of a trained VAE run (or set "
            "config.latent.allow_random_vae=True for a smoke run)."
        )
    return LatentDiffusion(
        vae=vae,
        diffusion=build_score(config, latent_spec),
        vae_params=vae_params,
        options=options,
    )


@dataclasses.dataclass(frozen=True)
class TeacherSource:
    """Where a few-step family's teacher comes from (keys of `config.consistency` / `config.progressive`).

    Attributes:
      teacher_checkpoint: the diffusion run's workdir, its `checkpoints` folder, or one step folder in it;
        the run's `config.model`, `config.sde` and `config.loss` must be this config's (the student is the
        same network and starts from the teacher's parameters).
      teacher_step: the checkpoint step to read (-1: the latest).
      teacher_use_ema: read the EMA parameters (else the raw ones).
      allow_random_teacher: with no `teacher_checkpoint`, use a randomly initialised teacher (smoke runs).
    """

    teacher_checkpoint: str = ""
    teacher_step: int = -1
    teacher_use_ema: bool = True
    allow_random_teacher: bool = False


def _split_teacher(config: ml_collections.ConfigDict, section: str, cls: type) -> tuple[TeacherSource, Any]:
    """The section's teacher keys as a `TeacherSource` and the rest as `cls`, every key checked."""
    if section not in config:
        raise ValueError(
            f"config.{section} is missing: family {config.family!r} reads its options from it (valid keys: "
            f"{sorted(init_fields(cls) + init_fields(TeacherSource))}); see experiments/*_{section[:2]}*.py."
        )
    options = dict(plain(config[section]))
    allowed = init_fields(cls) + init_fields(TeacherSource)
    check_keys(options, allowed, where=f"config.{section}", what=cls.__name__)
    teacher = {k: options.pop(k) for k in init_fields(TeacherSource) if k in options}
    return TeacherSource(**teacher), options


def _teacher_params(
    source: TeacherSource,
    student: ScoreDiffusion,
    load_params: ParamsLoader | None,
    *,
    section: str,
    needed: bool,
):
    """The teacher's parameters shaped like the student's, or None (a random teacher, or none needed)."""
    if not source.teacher_checkpoint:
        if needed and not source.allow_random_teacher:
            raise ValueError(
                f"config.{section}.teacher_checkpoint is empty: name the workdir of a trained diffusion run "
                f"with this config's model, sde and loss (or set config.{section}.allow_random_teacher=True "
                "for a smoke run)."
            )
        return None
    return _read_run(
        load_params,
        student.init,
        source.teacher_checkpoint,
        step=source.teacher_step,
        use_ema=source.teacher_use_ema,
        where=f"config.{section}.teacher_checkpoint",
        missing="the workdir of a trained diffusion run (train the teacher's experiment first).",
        mismatch="The student is the teacher's network: set config.model, config.sde and config.loss to "
        "those of the run that wrote the teacher.",
    )


def build_consistency(
    config: ml_collections.ConfigDict, spec: DataSpec, *, load_params: ParamsLoader | None = None
):
    """A consistency model (`config.consistency`; the student network from `config.model`/`sde`/`loss`, its
    sampler from `config.sample`, e.g. "consistency" with 1 or 2 steps).

    Args:
      config: the experiment config.
      spec: the dataset.
      load_params: reads the teacher's parameters (CD with `config.consistency.teacher_checkpoint`).
    """
    source, options = _split_teacher(config, "consistency", ConsistencyOptions)
    options.setdefault("total_steps", 0)
    options["total_steps"] = options["total_steps"] or config.train.num_steps
    options = typed_options(ConsistencyOptions, options, where="config.consistency")
    student = build_score(config, spec)
    with jax.ensure_compile_time_eval():  # Built inside traced code too (the state's creation).
        end = jnp.asarray(student.sde.T)
        top = float(student.sde.sigma(end) / student.sde.alpha(end))
    if options.sigma_max > top * (1 + 1e-6):
        raise ValueError(
            f"config.consistency.sigma_max={options.sigma_max} is above the student process's largest noise "
            f"level sigma/alpha = {top:.4g} at T; lower it to at most that."
        )
    if options.method != "cd" and source.teacher_checkpoint:
        raise ValueError(
            f"config.consistency.method={options.method!r} trains from data alone; clear "
            "config.consistency.teacher_checkpoint or use method 'cd'."
        )
    needed = options.method == "cd"
    teacher = _teacher_params(source, student, load_params, section="consistency", needed=needed)
    return ConsistencyModel(
        student=student,
        options=options,
        teacher_params=teacher,
        sampler=student.sampler,
        threshold=config.sample.threshold,
    )


def build_progressive(
    config: ml_collections.ConfigDict, spec: DataSpec, *, load_params: ParamsLoader | None = None
):
    """Progressive distillation (`config.progressive`; the student network from `config.model`/`sde`/
    `loss`, its sampler `config.sample`: "ddim" with the last round's steps on the uniform grid).

    Args:
      config: the experiment config.
      spec: the dataset.
      load_params: reads the teacher's parameters (`config.progressive.teacher_checkpoint`).
    """
    source, options = _split_teacher(config, "progressive", ProgressiveOptions)
    options.setdefault("steps_per_round", 0)
    rounds = options.get("rounds", ProgressiveOptions.rounds)
    per_round = max(config.train.num_steps // max(rounds, 1), 1)
    options["steps_per_round"] = options["steps_per_round"] or per_round
    options = typed_options(ProgressiveOptions, options, where="config.progressive")
    student = build_score(config, spec)
    sample = config.sample
    if sample.sampler == "ddim" and sample.steps != options.student_steps:
        raise ValueError(
            f"config.sample.steps={sample.steps}, but {options.rounds} rounds from "
            f"config.progressive.teacher_steps={options.teacher_steps} give a student of "
            f"{options.student_steps} DDIM steps; set config.sample.steps={options.student_steps}."
        )
    teacher = _teacher_params(source, student, load_params, section="progressive", needed=True)
    return ProgressiveDistillation(student=student, options=options, teacher_params=teacher)

"""The family interface, building a family from a config (the one place a family name is looked up), and
what families share: typed options from a config section, the optional optimizer hook, pixel levels.

A family may define `optimizer(base) -> optax.GradientTransformation | None` to give groups of its
parameters their own optimizers (a GAN's two players, a frozen autoencoder). `base(**overrides)` builds the
config's optimizer (`config.optim`) with some of its options replaced; the trainer passes it, so families
state what differs per group and never read `config.optim` themselves. `make_family_optimizer` is what the
trainer calls.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

import jax
import jax.numpy as jnp
import ml_collections
import optax

from gl_jax.data.sources import DataSpec

__all__ = [
    "Family",
    "build_family",
    "FAMILIES",
    "options_from_config",
    "typed_options",
    "build_module",
    "make_family_optimizer",
    "to_levels",
]

T = TypeVar("T")


class Family(Protocol):
    """What the trainer needs from a model family."""

    def init(self, key: jax.Array) -> Any:
        """Initial parameters."""

    def loss(self, params: Any, batch: dict, keys: jax.Array) -> tuple[jax.Array, dict]:
        """Batch-mean loss and metrics; `keys` are `[B]` per-example PRNG keys."""

    def sample(self, params: Any, key: jax.Array, num: int) -> jax.Array:
        """`num` samples shaped like the data, in the data's range."""


def _family_builders() -> dict[str, Callable[[ml_collections.ConfigDict, DataSpec], Family]]:
    # Imported here: the family modules import this one.
    from gl_jax.families.autoregressive import Autoregressive
    from gl_jax.families.diffusion import ScoreDiffusion
    from gl_jax.families.gan import GAN
    from gl_jax.families.latent import LatentDiffusion
    from gl_jax.families.vae import VAE

    return {
        "score": ScoreDiffusion.from_config,
        "gan": GAN.from_config,
        "vae": VAE.from_config,
        "autoregressive": Autoregressive.from_config,
        "latent": LatentDiffusion.from_config,
    }


FAMILIES = ("score", "gan", "vae", "autoregressive", "latent")


def build_family(config: ml_collections.ConfigDict, spec: DataSpec) -> Family:
    """Builds `config.family` for data described by `spec`."""
    families = _family_builders()
    if config.family not in families:
        near = difflib.get_close_matches(config.family, families, n=1)
        hint = f" Did you mean {near[0]!r}?" if near else ""
        raise ValueError(f"Unknown family {config.family!r}; choose one of {sorted(families)}.{hint}")
    return families[config.family](config, spec)


def make_family_optimizer(
    family: Any, base: Callable[..., optax.GradientTransformation]
) -> optax.GradientTransformation:
    """The family's optimizer when it defines one (`family.optimizer(base)` not None), else `base()`.

    Args:
      family: a built family.
      base: `base(**overrides)` builds the config's optimizer with some options replaced, e.g.
        `functools.partial(make_optimizer, **config.optim, total_steps=num_steps)`.
    """
    hook = getattr(family, "optimizer", None)
    tx = hook(base) if hook is not None else None
    return base() if tx is None else tx


def _plain(value: Any) -> Any:
    """ConfigDicts to dicts and lists to tuples, so typed fields get hashable, immutable values."""
    if isinstance(value, ml_collections.ConfigDict | ml_collections.FrozenConfigDict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return tuple(_plain(v) for v in value)
    return value


def _check_keys(keys: Any, allowed: list[str], where: str, what: str) -> None:
    for key in keys:
        if key not in allowed:
            near = difflib.get_close_matches(key, allowed, n=1)
            hint = f"; did you mean '{where}.{near[0]}'?" if near else ""
            raise ValueError(
                f"Unknown config key '{where}.{key}' for {what}{hint} Valid keys: {sorted(allowed)}."
            )


def _init_fields(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init and f.name not in ("parent", "name")]


def typed_options(cls: type[T], options: Mapping[str, Any], *, where: str) -> T:
    """`cls(**options)` for a dataclass `cls`, naming an unknown key and the nearest valid one.

    Args:
      cls: a (frozen) dataclass of options.
      options: the options (a ConfigDict or a mapping).
      where: the options' place in the config, for error messages, e.g. "config.gan".
    """
    options = _plain(options)
    _check_keys(options, _init_fields(cls), where, cls.__name__)
    return cls(**options)


def options_from_config(cls: type[T], config: ml_collections.ConfigDict, section: str) -> T:
    """`typed_options(cls, config[section])`; the section is one an experiment file creates.

    Raises:
      ValueError: the section is missing or has a key `cls` does not know.
    """
    if section not in config:
        raise ValueError(
            f"config.{section} is missing: family {config.family!r} reads its options from it "
            f"(valid keys: {sorted(_init_fields(cls))}); see the experiments/*_{section}.py files."
        )
    return typed_options(cls, config[section], where=f"config.{section}")


def build_module(
    models: Mapping[str, type], options: Mapping[str, Any], *, section: str = "config.model", **fixed: Any
) -> Any:
    """`models[options["name"]](**options, **fixed)`, with the nearest valid name or key in errors.

    A class with a `VARIANTS` table and `from_variant` also takes the option `variant` (a named size; the
    other options override it).

    Args:
      models: names to flax module classes.
      options: the config section, with a `name` entry.
      section: where the options live, for error messages.
      **fixed: fields the family sets from the data (e.g. the image shape), not from the config.
    """
    options = dict(_plain(options))
    name = options.pop("name", None)
    if name not in models:
        near = difflib.get_close_matches(str(name), models, n=1)
        hint = f" Did you mean {near[0]!r}?" if near else ""
        raise ValueError(f"Unknown {section}.name {name!r}; choose one of {sorted(models)}.{hint}")
    cls = models[name]
    variants = getattr(cls, "VARIANTS", None)
    allowed = [k for k in _init_fields(cls) if k not in fixed] + (["variant"] if variants else [])
    _check_keys(options, allowed, section, f"model {name!r}")
    variant = options.pop("variant", None)
    if variant is None:
        return cls(**options, **fixed)
    if variant not in variants:
        near = difflib.get_close_matches(variant, variants, n=1)
        hint = f" Did you mean {near[0]!r}?" if near else ""
        raise ValueError(
            f"Unknown variant {variant!r} of model {name!r}; choose one of {sorted(variants)}.{hint}"
        )
    return cls(**{**variants[variant], **options, **fixed})


def to_levels(x: jax.Array, *, levels: int, dequantized: bool) -> jax.Array:
    """The integer pixel values k in {0, ..., levels - 1} behind the pipeline's images in [-1, 1], `int32`.

    Inverts `gl_jax.data.pipeline.preprocess_images`: without dequantization x = 2 k / (levels - 1) - 1,
    so k = round((x + 1) (levels - 1) / 2); with it x = 2 (k + u) / levels - 1, u in [0, 1), so
    k = floor((x + 1) levels / 2). Both are exact in float32 for levels <= 2^16.

    Args:
      x: images in [-1, 1], any shape.
      levels: number of pixel levels (17 for sklearn digits, 256 for 8-bit images).
      dequantized: whether the pipeline added uniform noise (`config.data.dequantize`).
    """
    if dequantized:
        k = jnp.floor((x + 1.0) * (levels / 2.0))
    else:
        k = jnp.round((x + 1.0) * ((levels - 1) / 2.0))
    return jnp.clip(k, 0, levels - 1).astype(jnp.int32)

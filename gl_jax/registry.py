"""Names to builders, the one place a name from a config is looked up (models, families, processes,
samplers, weightings, time samplings, datasets), and the one place a misspelling gets its nearest name.

A `Registry` maps names to classes or functions. `registry[name]` names the valid choices and the nearest
one on a miss; `registry.options(name)` lists the keyword options the builder takes (a dataclass's init
fields, or a function's keyword-only parameters); `registry.build(name, options, where=...)` checks every
option against that list before calling the builder, so a misspelt key is one line naming its config path.
Everything that turns a string into an object does it through here, at the config edge; code below it
receives the objects.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Generic, TypeVar

__all__ = ["Registry", "nearest", "did_you_mean", "check_keys", "init_fields", "plain"]

T = TypeVar("T")


def nearest(name: str, choices: Iterable[str], *, n: int = 1, cutoff: float = 0.6) -> list[str]:
    """The `n` choices closest to `name` by `difflib`'s ratio (none when nothing is `cutoff` close; with
    `cutoff=0` the closest ones however far)."""
    return difflib.get_close_matches(str(name), list(choices), n=n, cutoff=cutoff)


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`" Did you mean 'x'?"` for the nearest choice, or `""`."""
    near = nearest(name, choices)
    return f" Did you mean {near[0]!r}?" if near else ""


def init_fields(cls: type) -> list[str]:
    """A dataclass's (or flax module's) constructor fields, without flax's `parent` and `name`."""
    return [f.name for f in dataclasses.fields(cls) if f.init and f.name not in ("parent", "name")]


def check_keys(keys: Iterable[str], allowed: Iterable[str], *, where: str, what: str) -> None:
    """Raises `ValueError` naming the first key not in `allowed`, its config path and the nearest key.

    Args:
      keys: the keys given.
      allowed: the valid keys.
      where: the keys' place in the config, e.g. "config.model".
      what: what the keys configure, e.g. "model 'unet'".
    """
    allowed = list(allowed)
    for key in keys:
        if key not in allowed:
            near = nearest(key, allowed)
            hint = f"; did you mean '{where}.{near[0]}'?" if near else ""
            raise ValueError(
                f"Unknown config key '{where}.{key}' for {what}{hint} Valid keys: {sorted(allowed)}."
            )


def plain(value: Any) -> Any:
    """Mappings (ConfigDicts included) to dicts and lists to tuples: hashable, immutable option values."""
    if isinstance(value, Mapping) or hasattr(value, "to_dict"):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return tuple(plain(v) for v in value)
    return value


class Registry(Mapping[str, T], Generic[T]):
    """Names to builders of one kind of thing.

    Args:
      kind: what the names name, for messages ("model", "SDE", "sampler").
      entries: names to classes or functions.
      skip: keyword options of the builders that are not the config's to set (e.g. a sampler's `steps`,
        which has its own config key).
    """

    def __init__(self, kind: str, entries: Mapping[str, T], *, skip: Iterable[str] = ()):
        self.kind = kind
        self._entries = dict(entries)
        self._skip = frozenset(skip)

    def __getitem__(self, name: str) -> T:
        return self.lookup(name)

    def lookup(self, name: str, *, where: str | None = None) -> T:
        """The builder of `name`; an unknown name is a `ValueError` naming the choices, the nearest one
        and, given `where`, the config path the name came from."""
        if name not in self._entries:
            at = f" ({where})" if where else ""
            raise ValueError(
                f"Unknown {self.kind} {name!r}{at}; choose one of {sorted(self._entries)}."
                f"{did_you_mean(name, self._entries)}"
            )
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {sorted(self._entries)})"

    def register(self, name: str, builder: T) -> None:
        """Adds `name` (a family or sampler of a researcher's own, without editing gl_jax).

        Raises:
          ValueError: `name` is taken.
        """
        if name in self._entries:
            raise ValueError(f"The {self.kind} name {name!r} is taken by {self._entries[name]!r}.")
        self._entries[name] = builder

    def options(self, name: str, *, where: str | None = None) -> list[str]:
        """The keyword options `name`'s builder takes: init fields of a dataclass (plus `variant` for a
        class with a `VARIANTS` table), or keyword-only parameters of a function."""
        builder = self.lookup(name, where=where)
        if dataclasses.is_dataclass(builder):
            names = init_fields(builder) + (["variant"] if getattr(builder, "VARIANTS", None) else [])
        else:
            params = inspect.signature(builder).parameters.values()
            names = [p.name for p in params if p.kind == p.KEYWORD_ONLY]
        return [n for n in names if n not in self._skip]

    def check_options(
        self, name: str, options: Iterable[str], *, where: str, name_at: str | None = None
    ) -> None:
        """Raises `ValueError` on an unknown `name` (naming `name_at`, its config path) or an option its
        builder does not take (naming it at `where`)."""
        allowed = self.options(name, where=name_at)
        check_keys(options, allowed, where=where, what=f"{self.kind} {name!r}")

    def build(
        self,
        name: str,
        options: Mapping[str, Any] | None = None,
        *,
        where: str,
        name_at: str | None = None,
        **fixed: Any,
    ) -> Any:
        """`builder(**options, **fixed)` after checking every option.

        A class with a `VARIANTS` table takes the option `variant`: `builder.from_variant(variant, ...)`,
        the named entry's fields with the other options overriding them.

        Args:
          name: the builder's name.
          options: options from the config (ConfigDicts and lists are made plain and hashable).
          where: the options' config path, for messages, e.g. "config.model".
          name_at: the name's config path (default `<where>.name`).
          **fixed: options the caller sets from elsewhere (e.g. the data's shape), not the config's.
        """
        name_at = name_at or f"{where}.name"
        builder = self.lookup(name, where=name_at)
        options = dict(plain(options or {}))
        allowed = [k for k in self.options(name, where=name_at) if k not in fixed]
        check_keys(options, allowed, where=where, what=f"{self.kind} {name!r}")
        variant = options.pop("variant", None)
        if variant is not None:
            variants = builder.VARIANTS
            if variant not in variants:
                raise ValueError(
                    f"Unknown variant {variant!r} of {self.kind} {name!r}; choose one of {sorted(variants)}."
                    f"{did_you_mean(variant, variants)}"
                )
        make = functools.partial(builder.from_variant, variant) if variant is not None else builder
        try:  # Only the arguments are checked here: an error inside the builder is its own.
            inspect.signature(make).bind(**options, **fixed)
        except TypeError as e:
            raise ValueError(f"Bad {where} options for {self.kind} {name!r}: {e}") from None
        return make(**options, **fixed)

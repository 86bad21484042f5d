"""The one registry helper: names to builders, errors that name the config path and the nearest name,
the options a builder takes, variants, and additions of one's own."""

import dataclasses

import pytest

from gl_jax.registry import Registry, check_keys, plain


@dataclasses.dataclass(frozen=True)
class Ring:
    radius: float = 1.0
    modes: int = 8

    VARIANTS = {"big": {"radius": 4.0, "modes": 16}}

    @classmethod
    def from_variant(cls, name, **overrides):
        return cls(**{**cls.VARIANTS[name], **overrides})


def walk(key, *, steps: int, stride: float = 1.0):
    return key, steps, stride


SHAPES = Registry("shape", {"ring": Ring})
WALKS = Registry("walk", {"walk": walk}, skip=("steps",))


def test_unknown_names_name_the_choices_the_nearest_one_and_the_config_path():
    with pytest.raises(
        ValueError, match=r"Unknown shape 'rnig' \(config\.toy\.name\); choose one of \['ring'\]"
    ):
        SHAPES.build("rnig", {}, where="config.toy")
    with pytest.raises(ValueError, match="Did you mean 'ring'"):
        SHAPES["rnig"]
    assert "ring" in SHAPES and "rnig" not in SHAPES and list(SHAPES) == ["ring"]


def test_options_are_a_dataclass_s_fields_or_a_function_s_keyword_only_parameters():
    assert SHAPES.options("ring") == ["radius", "modes", "variant"]
    assert WALKS.options("walk") == ["stride"]  # `steps` is skipped: it has a config key of its own.
    with pytest.raises(ValueError, match=r"'config\.walk\.strid' .*did you mean 'config\.walk\.stride'"):
        WALKS.check_options("walk", {"strid": 2}, where="config.walk")


def test_build_checks_every_option_and_expands_a_variant():
    assert SHAPES.build("ring", {"radius": 2.0}, where="config.toy") == Ring(radius=2.0)
    assert SHAPES.build("ring", {"variant": "big", "modes": 4}, where="config.toy") == Ring(4.0, 4)
    with pytest.raises(ValueError, match=r"Unknown variant 'bgi' of shape 'ring'.*Did you mean 'big'"):
        SHAPES.build("ring", {"variant": "bgi"}, where="config.toy")
    with pytest.raises(ValueError, match=r"config\.toy\.radiu'.*did you mean 'config\.toy\.radius'"):
        SHAPES.build("ring", {"radiu": 2.0}, where="config.toy")
    # Fields the caller sets are not the config's to set.
    with pytest.raises(ValueError, match="Valid keys: \\['modes', 'variant'\\]"):
        SHAPES.build("ring", {"radius": 1.0}, where="config.toy", radius=3.0)


def test_an_error_inside_a_builder_is_its_own():
    def broken(*, size: int = 1):
        raise TypeError("a bug inside the builder")

    with pytest.raises(TypeError, match="a bug inside the builder"):
        Registry("thing", {"broken": broken}).build("broken", {"size": 2}, where="config.thing")


def test_register_adds_a_name_and_refuses_a_taken_one():
    registry = Registry("shape", {"ring": Ring})
    registry.register("spiral", Ring)
    assert registry["spiral"] is Ring
    with pytest.raises(ValueError, match="'ring' is taken"):
        registry.register("ring", Ring)


def test_plain_values_are_hashable_and_check_keys_names_the_nearest():
    assert plain({"a": [1, {"b": [2]}]}) == {"a": (1, {"b": (2,)})}
    with pytest.raises(ValueError, match=r"'config\.x\.lr'.*did you mean 'config\.x\.lrr'"):
        check_keys(["lr"], ["lrr", "momentum"], where="config.x", what="an optimizer")

"""Sphinx configuration of the gl_jax API reference, built from the docstrings (Google style).

Build: sphinx-build -W -n docs/api build/api   (tests/test_docs.py builds it the same way).
"""

import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
os.environ.setdefault("JAX_PLATFORMS", "cpu")  # Importing the modules must not claim an accelerator.

import gl_jax  # noqa: E402

project = "gl_jax"
author = "gl_jax authors"
release = version = gl_jax.__version__

extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon"]

# Docstrings write code in single backticks, as Markdown does: render it as literal text.
default_role = "literal"

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True}
# flax.linen.Module.setup's docstring (about flax's own API) would otherwise appear on every module.
autodoc_inherit_docstrings = False

napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

# Nitpicky mode (-n) reports every reference it cannot resolve. The build has no network, so third-party
# types (jax.Array, flax modules, optax transformations, NumPy arrays, ConfigDicts) have no inventory to
# resolve against: ignore those namespaces only, so that a broken reference to a gl_jax object still fails.
nitpick_ignore_regex = [
    (r"py:.*", r"(jax|jaxlib|flax|optax|chex|diffrax|numpy|np|jnp|nn|ml_collections|grain|orbax|tfds)(\..*)?"),
    (r"py:.*", r"tensorflow_datasets(\..*)?|array_record(\..*)?|absl(\..*)?|PIL(\..*)?|tensorboardX(\..*)?"),
    (r"py:.*", r"(abc|typing|collections\.abc|types|os|pathlib|dataclasses|enum|concurrent|logging|threading)\..*"),
    (r"py:.*", r"(Array|ArrayLike|PRNGKey|PyTree|DTypeLike|Shape|Sharding|Mesh|Module|ConfigDict)"),
]
# Type variables of generic signatures are not documented objects.
nitpick_ignore = [("py:class", n) for n in ("gl_jax.families.build.T", "gl_jax.registry.T", "ScoreFn", "Initializer")]

html_theme = "alabaster"
html_static_path = []


def _skip_namedtuple_fields(app, what, name, obj, skip, options):
    """NamedTuple fields are described in their class's "Attributes:" section, not a second time."""
    del app, what, name, options
    doc = getattr(obj, "__doc__", None) or ""
    return True if doc.startswith("Alias for field number") else skip


def setup(app):
    app.connect("autodoc-skip-member", _skip_namedtuple_fields)

"""The `gl-jax` command: parses flags and hands over to `train_and_evaluate` or `sample`.

  gl-jax --config experiments/digits_vp.py[:variant] --workdir DIR --mode train|sample \
         [--config.optim.lr=1e-4 ...]
"""

from __future__ import annotations

import logging
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (path[:variant]).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder; an existing one is resumed.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "sample"], "What to run.")
flags.mark_flags_as_required(["config", "workdir"])


def _parse_flags(argv: list[str]) -> list[str]:
    """absl parsing, with config errors (unknown keys, bad values) as one line instead of a traceback."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        sys.exit(f"gl-jax: error: {e}\nPass --helpfull for all flags.")
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        message = " ".join(str(e).strip("'\"").replace("\\n", " ").split())
        sys.exit(f"gl-jax: config error: {message}")


def main(argv: list[str]) -> None:
    del argv
    from gl_jax.train import loop  # Deferred: `--help` should not wait for JAX.

    absl_logging.set_verbosity(absl_logging.WARNING)  # Quiet JAX/TFDS chatter; keep our own INFO lines.
    logging.getLogger("gl_jax").setLevel(logging.INFO)
    config = _CONFIG.value
    try:
        if _MODE.value == "train":
            loop.train_and_evaluate(config, _WORKDIR.value)
        else:
            loop.sample(config, _WORKDIR.value)
    except (
        loop.NonFiniteLossError,
        loop.WorkdirError,
        loop.CheckpointError,
        ValueError,
        FileNotFoundError,
    ) as e:
        sys.exit(f"gl-jax: error: {e}")


def run() -> None:
    """Console-script entry point."""
    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
    run()

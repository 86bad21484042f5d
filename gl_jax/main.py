"""The `gl-jax` command: parses flags and hands over to `train_and_evaluate`, `sample`, `compute_stats` or
`evaluate`.

  gl-jax --config experiments/digits_vp.py[:variant] --workdir DIR --mode train|sample|eval \
         [--config.optim.lr=1e-4 ...]
  gl-jax --config experiments/digits_vp.py[:variant] --mode stats    # reference statistics for FID
"""

from __future__ import annotations

import logging
import os
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (path[:variant]).")
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "The run's folder; an existing one is resumed. Not needed by --mode stats."
)
_MODE = flags.DEFINE_enum(
    "mode",
    "train",
    ["train", "sample", "stats", "eval"],
    "What to run: train; sample or eval the latest checkpoint; stats: the data's reference statistics.",
)
_COMPILATION_CACHE = flags.DEFINE_string(
    "compilation_cache",
    "",
    "Folder of JAX's persistent compilation cache, so that a restarted run (after a pre-emption, or a "
    "sample/eval job after training) loads its compiled steps instead of compiling them again. Default: "
    "$GL_JAX_CACHE/jax (~/.cache/gl_jax/jax); 'off' disables it; $JAX_COMPILATION_CACHE_DIR wins when set.",
)
flags.mark_flags_as_required(["config"])


def _compilation_cache_dir(flag: str) -> str | None:
    """The persistent compilation cache folder the flag and environment ask for, or None for none."""
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return None  # JAX reads it itself.
    if flag == "off":
        return None
    if flag:
        return os.path.abspath(os.path.expanduser(flag))
    root = os.environ.get("GL_JAX_CACHE") or os.path.join("~", ".cache", "gl_jax")
    return os.path.join(os.path.expanduser(root), "jax")


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
    if _WORKDIR.value is None and _MODE.value != "stats":
        sys.exit(f"gl-jax: error: --mode {_MODE.value} needs --workdir (the run's folder).")
    import jax  # Deferred, like the imports below: `--help` should not wait for JAX.

    from gl_jax.train import evaluate, loop, reference_stats

    cache_dir = _compilation_cache_dir(_COMPILATION_CACHE.value)
    if cache_dir is not None:
        # Only compilations over a second are stored: the train step, init, the sampler (tens of seconds on
        # CPU for the published U-Nets), not the many small dispatches.
        jax.config.update("jax_compilation_cache_dir", cache_dir)
        if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)

    absl_logging.set_verbosity(absl_logging.WARNING)  # Quiet JAX/TFDS chatter; keep our own INFO lines.
    logging.getLogger("gl_jax").setLevel(logging.INFO)
    config = _CONFIG.value
    try:
        if _MODE.value == "train":
            loop.train_and_evaluate(config, _WORKDIR.value)
        elif _MODE.value == "sample":
            loop.sample(config, _WORKDIR.value)
        elif _MODE.value == "stats":
            reference = reference_stats.compute_stats(config)
            print(f"Reference statistics of {reference.stats.num} examples in {reference.path}")
        else:
            evaluate.evaluate(config, _WORKDIR.value)
            print(f"Evaluation report in {os.path.join(os.path.abspath(_WORKDIR.value), 'eval/report.json')}")
    except (
        loop.NonFiniteLossError,
        loop.WorkdirError,
        loop.CheckpointError,
        ValueError,
        FileNotFoundError,
        ImportError,  # The one-time conversion of the FID Inception weights needs PyTorch.
    ) as e:
        sys.exit(f"gl-jax: error: {e}")


def run() -> None:
    """Console-script entry point."""
    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
    run()

"""The `gl-jax` command: parses flags and hands over to `train_and_evaluate`, `sample`, `compute_stats` or
`evaluate`.

  gl-jax --config digits_vp[:variant] --workdir DIR [--mode train] [--config.optim.lr=1e-4 ...]
  gl-jax --workdir DIR --mode sample|eval [--config.sample.steps=100 ...]   # the run's saved config
  gl-jax --config digits_vp[:variant] --mode stats            # reference statistics for FID
  gl-jax --config experiments/digits_vp.py --print_config     # the config after overrides

`--config` takes the name of a config that ships with the package (`gl_jax.experiments`) or a config
file's path, each with an optional `:variant`. Left out, it is the config saved in the workdir's
`run.json` by the training run (`gl_jax.train.saved_config`).

`gl-jax --help` lists the command's own flags and modes (`help_text`); `--helpfull` adds absl's and JAX's.
Bad input (a config file that is missing or not Python, an unknown or out-of-range option, a missing
dataset, an unusable workdir or checkpoint) ends the command with one line naming the problem and the
fix, and exit status 1; SIGINT and SIGTERM end it with one line and 128 + the signal number (see
`gl_jax.interrupts`). An unexpected error prints one line too and keeps its traceback in a file it names.
"""

from __future__ import annotations

import datetime
import importlib.util
import logging
import os
import re
import stat
import sys
import tempfile
import traceback

from gl_jax import xla_flags

__all__ = ["run", "main"]

_FLAGS_DEFINED = False

# The command's own flags, one line each, for `--help` (absl's `--helpfull` lists them among its own).
FLAG_HELP = (
    ("--config NAME|FILE[:variant]", "the experiment config, e.g. toy_vp:smoke; default: <workdir>/run.json"),
    ("--config.SECTION.KEY=VALUE", "override one config value, e.g. --config.optim.lr=5e-4 (repeatable)"),
    ("--workdir DIR", "the run's folder; an existing one is resumed (every mode but stats)"),
    ("--mode MODE", "train (default), sample, stats, eval or info; see the modes below"),
    ("--file FILE", "the picture, .npz or report whose provenance --mode info prints"),
    ("--print_config", "print the config after the overrides and exit; reads no data, uses no device"),
    ("--compilation_cache DIR", "JAX's compilation cache (default $GL_JAX_CACHE/jax); 'off' disables it"),
    ("--help", "this help; --helpfull also lists the flags of absl and the libraries"),
)
# Printed under the flags: the XLA option the command adds (gl_jax/xla_flags.py).
XLA_HELP = (
    f"On CPU, gl-jax adds XLA_FLAGS={xla_flags.CPU_CONVOLUTIONS} (XLA's own convolutions, faster on U-Nets "
    "than YNNPACK's) unless XLA_FLAGS sets that option or GL_JAX_XLA_DEFAULTS=0."
)
# Each mode: (name, what it does, an example command).
MODE_HELP = (
    (
        "train",
        "train the model; a workdir holding checkpoints is resumed",
        "gl-jax --config digits_vp --workdir runs/digits_vp",
    ),
    (
        "sample",
        "draw samples from the workdir's newest checkpoint into <workdir>/samples/",
        "gl-jax --workdir runs/digits_vp --mode sample",
    ),
    (
        "stats",
        "the data's reference statistics for FID and KID, once per dataset (no workdir)",
        "gl-jax --config fashion_mnist_ddpmpp --mode stats",
    ),
    (
        "eval",
        "FID, KID, precision/recall, bits/dim of the newest checkpoint into <workdir>/eval/report.json",
        "gl-jax --workdir runs/fm --mode eval",
    ),
    (
        "info",
        "print the provenance record a picture, .npz or report carries (config, step, key, versions)",
        "gl-jax --mode info --file runs/digits_vp/samples/sample_0003000_001.png",
    ),
)
_HELP_ARGS = ("-h", "-?", "-help", "--help", "--helpshort")


def help_text() -> str:
    """What `gl-jax --help` prints: usage, the command's own flags and the modes with an example each."""
    width = max(len(name) for name, _ in FLAG_HELP)
    lines = [
        "usage: gl-jax [--config NAME|FILE[:variant]] [--workdir DIR] [--mode MODE] "
        "[--config.SECTION.KEY=VALUE]...",
        "",
        "Trains, samples and evaluates the generative models of an experiment config.",
        "",
        "flags:",
        *(f"  {name:<{width}}  {text}" for name, text in FLAG_HELP),
        "",
        *_wrapped(XLA_HELP, indent=""),
        "",
        "modes:",
    ]
    tail = [
        "",
        "configs (NAME):",
        *_wrapped(", ".join(_experiment_names()), indent="  "),
    ]
    for name, text, example in MODE_HELP:
        lines += [f"  {name:<7} {text}", f"  {'':<7}   {example}"]
    return "\n".join(lines + tail) + "\n"


def _experiment_names() -> list[str]:
    from gl_jax.experiments import names

    return names()


def _wrapped(text: str, *, indent: str, width: int = 100) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width=width, initial_indent=indent, subsequent_indent=indent)


def _define_flags() -> None:
    """Defines the command's flags (once; deferred so that signals are handled before these imports)."""
    global _FLAGS_DEFINED, _CONFIG, _WORKDIR, _MODE, _COMPILATION_CACHE, _PRINT_CONFIG, _FILE
    if _FLAGS_DEFINED:
        return
    from absl import flags
    from ml_collections import config_flags

    _CONFIG = config_flags.DEFINE_config_file(
        "config", None, "Experiment config: a name of gl_jax.experiments or a file's path, [:variant]."
    )
    _WORKDIR = flags.DEFINE_string(
        "workdir", None, "The run's folder; an existing one is resumed. Not needed by --mode stats."
    )
    _MODE = flags.DEFINE_enum(
        "mode",
        "train",
        ["train", "sample", "stats", "eval", "info"],
        "What to run: train; sample or eval the latest checkpoint; stats: the data's reference statistics; "
        "info: the provenance of --file.",
    )
    _FILE = flags.DEFINE_string("file", None, "--mode info: a picture, .npz or report that gl-jax wrote.")
    _COMPILATION_CACHE = flags.DEFINE_string(
        "compilation_cache",
        "",
        "Folder of JAX's persistent compilation cache, so that a restarted run (after a pre-emption, or a "
        "sample/eval job after training) loads its compiled steps instead of compiling them again. Default: "
        "$GL_JAX_CACHE/jax (~/.cache/gl_jax/jax); 'off' disables it; $JAX_COMPILATION_CACHE_DIR wins when "
        "set. Created private (0700); a folder other users can write to is refused.",
    )
    _PRINT_CONFIG = flags.DEFINE_bool(
        "print_config", False, "Print the config after the command line's overrides and exit (reads no data)."
    )
    _FLAGS_DEFINED = True


class UsageError(ValueError):
    """Bad command-line input found before the job starts."""


def _one_line(text: str) -> str:
    return " ".join(str(text).replace("\\n", " ").split())


def _compilation_cache_dir(flag: str) -> str | None:
    """The persistent compilation cache folder the flag and environment ask for, or None for none."""
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return None  # JAX reads it itself (checked by `_check_private`).
    if flag == "off":
        return None
    if flag:
        return os.path.abspath(os.path.expanduser(flag))
    root = os.environ.get("GL_JAX_CACHE") or os.path.join("~", ".cache", "gl_jax")
    return os.path.join(os.path.expanduser(root), "jax")


def _check_private(folder: str, *, create: bool) -> None:
    """Creates `folder` 0700, or refuses one that another user owns or can write to.

    A compiled program in JAX's cache is machine code that this process runs: someone who can write
    there can run code as you.
    """
    if create and not os.path.exists(folder):
        os.makedirs(folder, mode=0o700, exist_ok=True)
    try:
        info = os.stat(folder)
    except FileNotFoundError:
        return
    if info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UsageError(
            f"The compilation cache {folder} is writable by other users or not yours (mode "
            f"{stat.filemode(info.st_mode)}), and programs compiled there run as you: run `chmod 700 "
            f"{folder}`, pass --compilation_cache=<a folder of your own>, or --compilation_cache=off."
        )


# The config source after `_resolve_config`: a file path[:variant] (what absl reads), and how to name it.
_CONFIG_SOURCE: str | None = None
_CONFIG_SHOWN: str | None = None


def _flag_argument(argv: list[str], name: str) -> str | None:
    """The value of `--<name>` in `argv` (`--name=X` or `--name X`), if any."""
    for i, arg in enumerate(argv):
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
        if arg == f"--{name}" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def _config_argument(argv: list[str]) -> str | None:
    """The config file[:variant] absl reads: `_resolve_config`'s, else the `--config` value in `argv`."""
    return _CONFIG_SOURCE if _CONFIG_SOURCE is not None else _flag_argument(argv, "config")


def _is_name(path: str) -> bool:
    """Whether a `--config` value names a packaged config (`toy_vp`, `gl_jax.experiments.toy_vp`)."""
    return bool(path) and os.sep not in path and "/" not in path and not path.endswith(".py")


def _resolve_config(argv: list[str]) -> list[str]:
    """`argv` with `--config` as a file path absl can read: a packaged config's name becomes its file;
    without `--config`, the saved config of `--workdir`'s run (`gl_jax.train.saved_config`).

    Raises:
      UsageError: no `--config` and no run to take it from, or an unknown config name.
    """
    global _CONFIG_SOURCE, _CONFIG_SHOWN
    value = _flag_argument(argv, "config")
    if value is None:
        workdir = _flag_argument(argv, "workdir")
        from gl_jax.train.run_record import RUN_FILE

        if not workdir or not os.path.isfile(os.path.join(os.path.expanduser(workdir), RUN_FILE)):
            where = f"{workdir} has no {RUN_FILE}" if workdir else "no --workdir is given"
            raise UsageError(
                f"--config is missing and {where} to take a trained run's config from: pass an experiment "
                "config, e.g. --config toy_vp:smoke (gl-jax --help lists the names), or the --workdir of a "
                "trained run."
            )
        from gl_jax.train import saved_config

        folder = os.path.abspath(os.path.expanduser(workdir))
        _CONFIG_SOURCE = f"{saved_config.__file__}:{folder}"
        _CONFIG_SHOWN = os.path.join(folder, RUN_FILE)
        return [f"--config={_CONFIG_SOURCE}", *argv]  # Before the overrides, which absl reads after it.
    path, colon, variant = value.partition(":")
    _CONFIG_SHOWN = value
    if os.path.isfile(path) or not _is_name(path):
        return argv
    from gl_jax import experiments

    try:
        resolved = experiments.config_path(path.removeprefix("gl_jax.experiments."))
    except ValueError as e:
        raise UsageError(f"--config {value}: {e}") from None
    _CONFIG_SOURCE = resolved + colon + variant
    out, i = [], 0
    while i < len(argv):  # `--config X` or `--config=X`, replaced by `--config=<file>[:variant]`.
        if argv[i] == "--config" and i + 1 < len(argv):
            out.append(f"--config={_CONFIG_SOURCE}")
            i += 2
            continue
        out.append(f"--config={_CONFIG_SOURCE}" if argv[i].startswith("--config=") else argv[i])
        i += 1
    return out


def _check_config_file(value: str) -> None:
    """One line for a config file that is missing or is not Python, before absl reads it."""
    path = value.split(":", 1)[0]
    example = "e.g. --config digits_vp:smoke (a packaged config's name) or --config experiments/digits_vp.py"
    if not path:
        raise UsageError(f"--config is empty; pass an experiment config file, {example}.")
    if not os.path.isfile(path):
        raise UsageError(f"Config file {path} not found; pass an experiment config file, {example}.")
    try:
        with open(path, "rb") as f:
            compile(f.read(), path, "exec")
    except (SyntaxError, ValueError) as e:
        where = f" at line {e.lineno}" if getattr(e, "lineno", None) else ""
        raise UsageError(
            f"Config file {path} is not Python ({type(e).__name__}{where}: {getattr(e, 'msg', e)}); pass an "
            f"experiment config file defining get_config(), {example}."
        ) from None


def _load_reference_config(value: str):
    """The config the file gives without command-line overrides (to check the overrides' types)."""
    path, _, variant = value.partition(":")
    spec = importlib.util.spec_from_file_location("gl_jax_config_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant) if variant else module.get_config()


def _override_paths(argv: list[str]) -> list[str]:
    """The key paths of the `--config.<path>[=value]` (and boolean `--noconfig.<path>`) arguments."""
    paths = []
    for arg in argv:
        for prefix in ("--config.", "--noconfig."):
            if arg.startswith(prefix):
                paths.append(arg[len(prefix) :].split("=", 1)[0])
    return paths


def _initials(name: str) -> str:
    return "".join(word[0] for word in name.split("_") if word)


def _key_paths(node, prefix: str = "config") -> list[str]:
    """Every key path below `node` (sections and values), e.g. `config.optim.lr`."""
    if not hasattr(node, "keys"):
        return []
    paths = []
    for key in node.keys():
        paths.append(f"{prefix}.{key}")
        paths += _key_paths(node[key], f"{prefix}.{key}")
    return paths


def _nearest_key(name: str, section: str, keys: list[str], config) -> str | None:
    """The valid key path nearest to `section.name`: a sibling spelt alike, a sibling that abbreviates it
    (or that it abbreviates: `learning_rate` and `lr`), the same name in another section, a key spelt
    alike anywhere, else the most alike sibling."""
    from gl_jax.registry import nearest

    close = nearest(name, keys)
    if close:
        return f"{section}.{close[0]}"
    for key in keys:
        if len(name) > 1 and len(key) > 1 and (key == _initials(name) or _initials(key) == name):
            return f"{section}.{key}"
    everywhere = _key_paths(config)
    same = [p for p in everywhere if p.rsplit(".", 1)[1] == name]
    if same:
        return same[0]
    close = nearest(name, [p.rsplit(".", 1)[1] for p in everywhere])
    if close:
        return next(p for p in everywhere if p.rsplit(".", 1)[1] == close[0])
    close = nearest(name, keys, cutoff=0.0)
    return f"{section}.{close[0]}" if close else None


def _unknown_key_line(path: str, config) -> str | None:
    """The one-line error for an override whose key path is not in `config`, or None when it is there."""
    node, section = config, "config"
    for part in path.split("."):
        if "[" in part or not part:
            return None  # An index into a sequence: ml_collections' own error stands.
        if not hasattr(node, "keys"):
            *_, leaf = section.rsplit(".", 1)
            return (
                f"unknown config key '{part}'. Did you mean \"{leaf}\" (--{section}=...)? {section} is a "
                f"value ({type(node).__name__}), not a section: fix the --config.{path} override."
            )
        keys = [str(k) for k in node.keys()]
        if part not in keys:
            fix = f"Fix the --config.{path} override"
            if not keys:
                return (
                    f"unknown config key '{part}'. {section} holds no keys in this config file, and an "
                    f"override only changes a key the file sets: {fix}, or add '{part}' to {section} in the "
                    "config file."
                )
            near = _nearest_key(part, section, keys, config)
            hint = f'Did you mean "{near.rsplit(".", 1)[1]}" (--{near})?' if near else ""
            shown = ", ".join(sorted(keys)[:20]) + (", ..." if len(keys) > 20 else "")
            return f"unknown config key '{part}'. {hint} {fix}: the keys of {section} are {shown}."
        node, section = node[part], f"{section}.{part}"
    return None


def _first_unknown_key(argv: list[str]) -> str | None:
    """The error line of the first `--config.<path>` override naming a key the config file lacks."""
    try:
        config = _load_reference_config(_config_argument(argv) or "")
    except Exception:  # noqa: BLE001 - a config file that fails to load is reported by absl's parsing.
        return None
    for path in _override_paths(argv):
        line = _unknown_key_line(path, config)
        if line:
            return line
    return None


def _parse_flags(argv: list[str]) -> list[str]:
    """absl parsing, with config errors (missing file, unknown keys, bad values) as one line; `--help` is
    the command's own (`help_text`)."""
    from absl import flags

    if any(arg in _HELP_ARGS for arg in argv[1:]):
        sys.stdout.write(help_text())
        sys.exit(0)
    try:
        if _flag_argument(argv[1:], "mode") == "info":  # Reads a file; no config.
            return flags.FLAGS(argv)
        argv = [argv[0], *_resolve_config(argv[1:])]
        _check_config_file(_config_argument(argv[1:]))
        return flags.FLAGS(argv)
    except UsageError as e:
        _exit_line(f"gl-jax: error: {e}")
    except flags.Error as e:
        message = str(e)
        if "Error whilst parsing config file" in message:
            # The config file's own exception: its last line, without the traceback absl put before it.
            flag = message.split(": Error whilst parsing config file", 1)[0].removeprefix("flag ")
            last = [line for line in message.splitlines() if line.strip()][-1]
            _exit_line(f"gl-jax: error: {flag}: {_one_line(last)}")
        message = _one_line(message.removeprefix("flag "))
        if message.startswith("--config."):
            _exit_line(f"gl-jax: error: {message}; give a value of the type the config file gives that key.")
        _exit_line(f"gl-jax: error: {message} (see --helpfull for all flags)")
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        line = _first_unknown_key(argv[1:])
        if line:
            _exit_line(f"gl-jax: error: {line}")
        # ml_collections' unknown-key error, escaped: "'lrr' Did you mean "lr" instead of "lrr"?".
        text = _one_line(str(e).replace("\\n", " ").replace("\\", ""))
        match = re.match(r"^\W*([\w.]+)\W+(.*)$", text)
        key, hint = match.groups() if match else (text, "")
        hint = hint.rstrip("\"' ")
        _exit_line(
            f"gl-jax: error: unknown config key '{key}'. {hint} Fix the --config.<key> override: the keys "
            "are those of the config file and gl_jax/configs.py."
        )
    return []  # Not reached.


def _exit_line(line: str, code: int = 1) -> None:
    print(line, file=sys.stderr, flush=True)
    sys.exit(code)


def _unexpected(e: BaseException) -> None:
    """One line for an error gl-jax did not expect; the traceback goes to a file that the line names."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = os.path.join(tempfile.gettempdir(), f"gl_jax-error-{stamp}-{os.getpid()}.txt")
    try:
        with open(path, "w") as f:
            f.write(" ".join(sys.argv) + "\n\n")
            traceback.print_exception(e, file=f)
        where = f"the traceback is in {path}"
    except OSError:
        where = "the traceback could not be written"
    first = str(e).splitlines()[0] if str(e) else ""
    _exit_line(
        f"gl-jax: error: {type(e).__name__}: {first} (unexpected: please report it with the command; {where})"
    )


def _print_config(config, mode: str) -> None:
    """`--print_config`: the config after the overrides, checked as `mode` would check it; exits 0."""
    from gl_jax.train.validation import check_config, check_override_types

    try:
        check_override_types(config, _load_reference_config(_config_argument(sys.argv[1:]) or ""))
        check_config(config, mode=mode)
    except ValueError as e:
        _exit_line(f"gl-jax: error: {_one_line(e)}")
    overrides = len(_override_paths(sys.argv[1:]))
    sys.stdout.write(f"# The config of {_CONFIG_SHOWN} after {overrides} command-line override(s).\n{config}")
    sys.stdout.flush()
    sys.exit(0)


def _print_provenance(path: str | None) -> None:
    """`--mode info --file F`: the file's provenance record as JSON; exits 0 (1 with one line when none)."""
    import json

    from gl_jax.train import provenance

    if not path:
        _exit_line("gl-jax: error: --mode info needs --file, a picture, .npz or report that gl-jax wrote.")
    try:
        record = provenance.read(path)
    except (OSError, ValueError) as e:
        _exit_line(f"gl-jax: error: {_one_line(e)}")
    sys.stdout.write(json.dumps(record, indent=2, sort_keys=True) + "\n")
    sys.stdout.flush()
    sys.exit(0)


def main(argv: list[str]) -> None:
    del argv
    from gl_jax.train.validation import check_config, check_override_types

    mode, config = _MODE.value, _CONFIG.value
    if mode == "info":
        _print_provenance(_FILE.value)
    if _PRINT_CONFIG.value:
        _print_config(config, mode)
    if _WORKDIR.value is None and mode != "stats":
        _exit_line(f"gl-jax: error: --mode {mode} needs --workdir (the run's folder).")
    try:
        check_override_types(config, _load_reference_config(_config_argument(sys.argv[1:]) or ""))
        check_config(config, mode=mode)
        cache_dir = _compilation_cache_dir(_COMPILATION_CACHE.value)
        if cache_dir is not None:
            _check_private(cache_dir, create=True)
        elif os.environ.get("JAX_COMPILATION_CACHE_DIR"):
            _check_private(os.environ["JAX_COMPILATION_CACHE_DIR"], create=True)
    except ValueError as e:
        _exit_line(f"gl-jax: error: {_one_line(e)}")

    import jax  # Deferred, like the imports below: `--help` should not wait for JAX.

    from gl_jax.data.sources import MissingDatasetError
    from gl_jax.eval import evaluate, reference
    from gl_jax.eval.sample import sample
    from gl_jax.train import loop
    from gl_jax.train.checkpoint import CheckpointError
    from gl_jax.train.workdir import WorkdirError

    if cache_dir is not None:
        # Only compilations over a second are stored: the train step, init, the sampler (tens of seconds on
        # CPU for the published U-Nets), not the many small dispatches.
        jax.config.update("jax_compilation_cache_dir", cache_dir)
        if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)

    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)  # Quiet JAX/TFDS chatter; keep our own INFO lines.
    logging.getLogger("gl_jax").setLevel(logging.INFO)
    workdir = _WORKDIR.value
    try:
        if mode == "train":
            loop.train_and_evaluate(config, workdir)
        elif mode == "sample":
            sample(config, workdir)
        elif mode == "stats":
            stats = reference.compute_stats(config)
            print(f"Reference statistics of {stats.stats.num} examples in {stats.path}")
        else:
            evaluate.evaluate(config, workdir)
            folder = evaluate.report_folder(config)
            print(f"Evaluation report in {os.path.join(os.path.abspath(workdir), folder, 'report.json')}")
    except (
        loop.NonFiniteLossError,
        WorkdirError,
        CheckpointError,
        MissingDatasetError,
        ValueError,
        FileNotFoundError,
        PermissionError,
        ImportError,  # The one-time conversion of the FID Inception weights needs PyTorch.
    ) as e:
        _exit_line(f"gl-jax: error: {_one_line(e)}")
    except Exception as e:  # noqa: BLE001 - never a traceback on the terminal.
        _unexpected(e)


def run() -> None:
    """Console-script entry point: SIGINT and SIGTERM are handled before anything heavy is imported."""
    from gl_jax.interrupts import Interrupted, handle_signals

    xla_flags.apply_defaults()  # Before anything can start JAX's backend.
    with handle_signals() as signals:
        try:
            try:
                _define_flags()
                from absl import app

                app.run(main, flags_parser=_parse_flags)
            except SystemExit:
                signals.check()  # A signal whose exception Python swallowed (see gl_jax.interrupts).
                raise
        except Interrupted as e:
            _exit_line(f"gl-jax: {e}", e.exit_code)


if __name__ == "__main__":
    run()

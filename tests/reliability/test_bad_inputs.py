"""Bad inputs (at least 30), each answered by the real `gl-jax` with one line naming the key or file and the
fix.

Every case runs against its own copy of a trained toy run; each must exit 1, print no traceback, print
exactly one `gl-jax:` line that matches the case's pattern, and leave the copy's checkpoints byte-for-byte
as they were. The cases run three at a time (most fail before JAX is imported).
"""

import concurrent.futures
import os
import re

import pytest

from tests.conftest import REPO
from tests.reliability.conftest import TOY, copy_run, error_lines, gl_jax, snapshot

W = "<workdir>"  # Replaced by the case's copy of the trained run.
# Replaced by a new folder: for another dataset or model, which the trained run's run.json would refuse first.
NEW = "<new>"
EXP = str(REPO / "experiments")

# name: (arguments after gl-jax, regex the one error line must match)
CASES = {
    "config file missing": (
        ["--config", "nothere.py", "--workdir", W],
        r"Config file nothere\.py not found.*--config experiments/",
    ),
    "config file not Python": (
        ["--config", str(REPO / "README.md"), "--workdir", W],
        r"README\.md is not Python \(SyntaxError at line \d+.*get_config",
    ),
    "config empty": (["--config=", "--workdir", W], r"--config is empty; pass an experiment config file"),
    "unknown variant": (
        ["--config", f"{EXP}/toy_vp.py:nosuch", "--workdir", W],
        r"toy_vp\.py:nosuch: ValueError: Unknown variant 'nosuch' of toy_vp; use smoke or one of",
    ),
    "unknown key": (
        ["--config", TOY, "--workdir", W, "--config.optim.lrr=1e-3"],
        r"unknown config key 'lrr'\. Did you mean \"lr\".*Fix the --config",
    ),
    "unknown section": (
        ["--config", TOY, "--workdir", W, "--config.trian.num_steps=3"],
        r"unknown config key 'trian'\. Did you mean \"train\"",
    ),
    "unknown key, an abbreviation": (
        ["--config", TOY, "--workdir", W, "--config.optim.learning_rate=1e-3"],
        r"unknown config key 'learning_rate'\. Did you mean \"lr\" \(--config\.optim\.lr\)\?"
        r".*keys of config\.optim",
    ),
    "unknown key, in another section": (
        ["--config", TOY, "--workdir", W, "--config.sample.batch_size=8"],
        r"unknown config key 'batch_size'\. Did you mean \"batch_size\" \(--config\.data\.batch_size\)",
    ),
    "key below a value": (
        ["--config", TOY, "--workdir", W, "--config.optim.lr.value=1e-3"],
        r"unknown config key 'value'\. .*config\.optim\.lr is a value \(float\), not a section",
    ),
    "key in an empty section": (
        ["--config", TOY, "--workdir", W, "--config.sample.options.order=2"],
        r"unknown config key 'order'\. config\.sample\.options holds no keys in this config file"
        r".*in the config file",
    ),
    "wrong scalar type": (
        ["--config", TOY, "--workdir", W, "--config.train.num_steps=abc"],
        r"--config\.train\.num_steps=abc: .*'abc'; give a value of the type",
    ),
    "tuple of the wrong type": (
        ["--config", TOY, "--workdir", W, "--config.model.features=abc"],
        r"config\.model\.features=\('abc',\) is invalid: it must be a sequence of number values.*"
        r"--config\.model\.features=",
    ),
    "log_every 0": (
        ["--config", TOY, "--workdir", W, "--config.train.log_every=0"],
        r"config\.train\.log_every=0 is invalid: it must be an integer >= 1",
    ),
    "checkpoint_every 0": (
        ["--config", TOY, "--workdir", W, "--config.train.checkpoint_every=0"],
        r"config\.train\.checkpoint_every=0 is invalid: it must be an integer >= 1",
    ),
    "steps_per_call 0": (
        ["--config", TOY, "--workdir", W, "--config.train.steps_per_call=0"],
        r"config\.train\.steps_per_call=0 is invalid: it must be an integer >= 1",
    ),
    "max_to_keep 0": (
        ["--config", TOY, "--workdir", W, "--config.train.max_to_keep=0"],
        r"config\.train\.max_to_keep=0 is invalid: it must be an integer >= 1",
    ),
    "num_steps negative": (
        ["--config", TOY, "--workdir", W, "--config.train.num_steps=-5"],
        r"config\.train\.num_steps=-5 is invalid",
    ),
    "batch_size 0": (
        ["--config", TOY, "--workdir", W, "--config.data.batch_size=0"],
        r"config\.data\.batch_size=0 is invalid: it must be an integer >= 1",
    ),
    "interval not a multiple": (
        ["--config", TOY, "--workdir", W, "--config.train.log_every=12"],
        r"config\.train\.log_every=12 is invalid: it must be a multiple of config\.train\.steps_per_call=5",
    ),
    "lr nan": (
        ["--config", TOY, "--workdir", W, "--config.optim.lr=nan"],
        r"config\.optim\.lr=nan is invalid: it must be a finite number",
    ),
    "lr negative": (
        ["--config", TOY, "--workdir", W, "--config.optim.lr=-0.1"],
        r"config\.optim\.lr=-0\.1 is invalid: it must be a finite number > 0",
    ),
    "ema_decay above 1": (
        ["--config", TOY, "--workdir", W, "--config.train.ema_decay=1.5"],
        r"config\.train\.ema_decay=1\.5 is invalid: it must be a finite number >= 0\.0 and <= 1\.0",
    ),
    "on_nonfinite unknown": (
        ["--config", TOY, "--workdir", W, "--config.train.on_nonfinite=ignore"],
        r"config\.train\.on_nonfinite='ignore' is invalid: it must be one of \['stop', 'skip'\]",
    ),
    "compute_dtype unknown": (
        ["--config", TOY, "--workdir", W, "--config.train.compute_dtype=float16"],
        r"config\.train\.compute_dtype='float16' is invalid: it must be one of",
    ),
    "sample threshold unknown": (
        ["--config", TOY, "--workdir", W, "--mode", "sample", "--config.sample.threshold=hard"],
        r"config\.sample\.threshold='hard' is invalid: it must be one of \['none', 'static', 'dynamic'\]",
    ),
    "eval num_samples 1": (
        ["--config", TOY, "--workdir", W, "--mode", "eval", "--config.eval.num_samples=1"],
        r"config\.eval\.num_samples=1 is invalid: it must be an integer >= 2",
    ),
    "stats max_images negative": (
        ["--config", TOY, "--mode", "stats", "--config.stats.max_images=-1"],
        r"config\.stats\.max_images=-1 is invalid",
    ),
    "unknown mode": (["--config", TOY, "--workdir", W, "--mode", "serve"], r"--mode.*serve"),
    "workdir empty": (["--config", TOY, "--workdir="], r"--workdir is empty; pass the run's folder"),
    "workdir is a file": (
        ["--config", TOY, "--workdir", "<file>"],
        r"--workdir \S+ is a file, not a folder; pass a folder",
    ),
    "workdir missing for sample": (
        ["--config", TOY, "--workdir", "<missing>", "--mode", "sample"],
        r"No checkpoint in \S+/checkpoints to sample from; train first with --mode train",
    ),
    "unknown dataset": (
        ["--config", TOY, "--workdir", NEW, "--config.data.name=cifar11"],
        r"Unknown dataset 'cifar11' \(config\.data\.name\)\. Nearest: \[.*'cifar10'.*\]",
    ),
    "hub dataset": (
        ["--config", TOY, "--workdir", NEW, "--config.data.name=huggingface:mnist"],
        r"config\.data\.name='huggingface:mnist' is not a dataset name gl_jax reads.*nothing is fetched",
    ),
    "text name with a path": (
        ["--config", TOY, "--workdir", NEW, "--config.data.name=text/../../x"],
        r"text/<name> takes a plain file name.*no paths",
    ),
    "text file missing": (
        ["--config", TOY, "--workdir", NEW, "--config.data.name=text/nosuchfile"],
        r"Text file \S+nosuchfile\.txt not found.*GL_JAX_TEXT_DIR",
    ),
    "synthetic shape unknown": (
        ["--config", TOY, "--workdir", NEW, "--config.data.name=synthetic_images/9x9x1"],
        r"Unknown configuration '9x9x1' of synthetic_images.*'8x8x1'",
    ),
    "toy distribution unknown": (
        ["--config", TOY, "--workdir", NEW, "--config.data.name=toy/gmm_3d"],
        r"Unknown configuration 'gmm_3d' of toy.*Nearest: \['gmm_2d'",
    ),
    "standard dataset not prepared": (
        ["--config", TOY, "--workdir", NEW, "--config.data.name=cifar10"],
        r"Dataset 'cifar10' is not prepared as array_record.*tfds build cifar10",
    ),
    "read-only data_dir": (
        [
            "--config",
            TOY,
            "--workdir",
            NEW,
            "--config.data.name=toy/two_moons",
            "--config.data.data_dir=/sys/gl_jax_data",
        ],
        r"Cannot prepare toy/two_moons in the data_dir /sys/gl_jax_data .*--config\.data\.data_dir",
    ),
    "unknown model": (
        ["--config", TOY, "--workdir", NEW, "--config.model.name=mpl"],
        r"Unknown model 'mpl'.*Did you mean 'mlp'",
    ),
    "shared compilation cache": (
        ["--config", TOY, "--workdir", W, "--compilation_cache=<open cache>"],
        r"compilation cache \S+ is writable by other users.*chmod 700",
    ),
    "checkpoint of another model": (
        ["--config", TOY, "--workdir", W, "--config.model.features=(16,16)"],
        r"config\.model=.*differs from the run in .*trained with config\.model=.*new --workdir",
    ),
}


def _run(case: str, tmp_path, trained_toy: str, data_dir: str):
    args, _ = CASES[case]
    folder = tmp_path / re.sub(r"\W", "_", case)
    workdir = copy_run(trained_toy, folder / "run")
    (folder / "file").write_text("not a folder")
    cache = folder / "open_cache"
    cache.mkdir()
    cache.chmod(0o777)
    replace = {
        W: workdir,
        NEW: str(folder / "new"),
        "<file>": str(folder / "file"),
        "<missing>": str(folder / "missing"),
    }
    args = [replace.get(a, a).replace("<open cache>", str(cache)) for a in args]
    before = snapshot(os.path.join(workdir, "checkpoints"))
    own_cache = any(a.startswith("--compilation_cache") for a in args)
    proc = gl_jax(*args, data_dir=data_dir, **({"cache": None} if own_cache else {}))
    return proc, before, snapshot(os.path.join(workdir, "checkpoints"))


# More range checks of config.train/optim/eval options by the same rule table: with -m slow (each case is a
# ~3 s subprocess); the default run keeps 30 cases, every kind of problem among them.
SLOW_CASES = {
    "unknown key, an abbreviation",
    "tuple of the wrong type",
    "checkpoint_every 0",
    "steps_per_call 0",
    "max_to_keep 0",
    "num_steps negative",
    "lr negative",
    "ema_decay above 1",
    "on_nonfinite unknown",
    "compute_dtype unknown",
    "eval num_samples 1",
    "stats max_images negative",
}


@pytest.fixture(scope="module")
def results(request, tmp_path_factory, trained_toy, data_dir):
    """Every case the session selected, run three at a time."""
    selected = {
        item.callspec.params["case"]
        for item in request.session.items
        if getattr(item, "module", None) is request.module and hasattr(item, "callspec")
    }
    tmp_path = tmp_path_factory.mktemp("bad_inputs")
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        futures = {
            case: pool.submit(_run, case, tmp_path, trained_toy, data_dir) for case in sorted(selected)
        }
        return {case: future.result() for case, future in futures.items()}


def test_at_least_thirty_cases():
    assert len(CASES) >= 30 and len(set(CASES) - SLOW_CASES) >= 30
    assert SLOW_CASES <= set(CASES)


@pytest.mark.parametrize(
    "case", [pytest.param(c, marks=pytest.mark.slow) if c in SLOW_CASES else c for c in CASES]
)
def test_bad_input_is_one_line_naming_the_problem_and_fix(results, case):
    proc, before, after = results[case]
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, (case, proc.returncode, output[-3000:])
    assert "Traceback" not in output, output[-3000:]
    lines = error_lines(proc)
    assert len(lines) == 1, (case, lines, output[-2000:])
    assert lines[0].startswith("gl-jax: error: ")
    assert re.search(CASES[case][1], lines[0]), (case, lines[0])
    assert after == before  # The run's earlier checkpoints are untouched.

"""`train_and_evaluate(config, workdir)`: the training job around the one step.

The loop is family-agnostic: from the run's `Experiment` (data pipeline, family, optimizer, replicated
state) it compiles the shared train step over the device mesh, and then only feeds batches, logs, writes
pictures and saves checkpoints. A restart resumes from the latest checkpoint (state and data position)
and reproduces the uninterrupted run bit for bit; SIGTERM saves a checkpoint and exits cleanly.

Multi-process jobs (`config.distributed`): every process runs this same loop on its own data shards and
saves and restores checkpoints together with the others; metrics, logs, progress and pictures come from
process 0 only. The global batch is the concatenation of `config.data.num_shards` shard batches, so a run
with a fixed number of shards computes the same numbers on any number of processes that divides it.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import time
from typing import Any

import jax
import ml_collections
import numpy as np
import tqdm
from jax.experimental import multihost_utils

from gl_jax import plots
from gl_jax.data.pipeline import make_iterator, make_poisson_dataset
from gl_jax.interrupts import Interrupted, handle_signals
from gl_jax.train import distributed, parallel
from gl_jax.train.checkpoint import Checkpointer, CheckpointError
from gl_jax.train.experiment import Experiment, any_process, check_devices
from gl_jax.train.posthoc_ema import (
    POSTHOC_DIR,
    Snapshot,
    find_power_ema_state,
    posthoc_sigma_rels,
    save_snapshots,
)
from gl_jax.train.precision import COMPUTE_DTYPES
from gl_jax.train.privacy import PrivacyAccountant, check_budget, dp_options
from gl_jax.train.run_record import check_config_matches, read_record, write_record
from gl_jax.train.state import TrainState
from gl_jax.train.step import REMAT_POLICIES, make_train_step
from gl_jax.train.validation import check_config
from gl_jax.train.workdir import WorkdirLock, prepare_workdir
from gl_jax.train.writers import MetricsWriter, hparams_of, read_metrics

__all__ = ["train_and_evaluate", "set_data_position", "NonFiniteLossError"]

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """The loss or the gradients became NaN/Inf."""


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
    """Trains `config` in `workdir`, resuming from its latest checkpoint.

    Writes `run.json` (the resolved config, the data spec, the command; `gl_jax.train.run_record`),
    `checkpoints/`, `phema/` (post-hoc EMA snapshots, when `config.posthoc_ema.every` is set),
    `metrics.jsonl` and `tensorboard/` (tags `train/...`: the step's metrics, learning
    rate, steps/s, compile seconds, and for private training `train/epsilon`; `eval/...`: eval loss and
    sample pictures; the config as text and hyper-parameters), `samples/step_*.png` (captioned, drawn
    from the same noise at every step, beside data) and `loss_curve.png`.
    Holds the workdir's lock while it runs (a second training run on it is refused). A run that has
    reached `config.train.num_steps` writes whatever final pictures are missing and returns. SIGTERM or
    SIGINT saves a checkpoint at the next step and stops (SIGTERM returns, SIGINT raises `Interrupted`).

    Args:
      config: an experiment config (see `experiments/`).
      workdir: output folder; rerunning with the same folder resumes.

    Returns:
      The final train state.

    Raises:
      gl_jax.train.validation.ConfigError: an invalid option.
      ValueError: the workdir's run was trained with another family, network, process, parametrisation or
        data, or other privacy settings (`run.json`).
      gl_jax.train.privacy.PrivacyBudgetError: private training whose `config.train.num_steps` would spend
        more than `config.privacy.target_epsilon` (before anything is written).
      WorkdirError: the workdir is empty, not writable, or held by another training process.
      NonFiniteLossError: the loss, gradients or optimizer update became NaN/Inf and
        `config.train.on_nonfinite == "stop"`.
      KeyboardInterrupt: `gl_jax.interrupts.Interrupted`, on SIGINT (after saving), or on either signal
        during start-up (nothing saved).
    """
    with handle_signals() as signals:
        check_config(config, mode="train")
        workdir = prepare_workdir(workdir)
        distributed.initialize(config.distributed)  # Before anything touches a device.
        lock = WorkdirLock(workdir, purpose="training")
        if jax.process_index() == 0:
            lock.acquire()  # Before anything in checkpoints/ is read or cleaned up.
        try:
            return _train(config, workdir, signals)
        finally:
            lock.release()


def _train(config: ml_collections.ConfigDict, workdir: str, signals) -> TrainState:
    check_devices(config)
    t = config.train
    k = t.steps_per_call
    is_main = jax.process_index() == 0
    record = read_record(workdir, set_aside=is_main)
    if record is not None:  # A resumed run keeps its meaning (every process checks, so all stop together).
        check_config_matches(config, record.config, workdir=workdir)
        _check_privacy_matches(config, record.config, workdir=workdir)
    run = Experiment(config, load_train=True)
    privacy = dp_options(config)
    accountant = None
    if privacy is not None:  # Refused before anything is written when the steps would overspend.
        accountant = PrivacyAccountant(
            dataset_size=len(run.arrays["x"]),
            expected_batch_size=privacy.expected_batch_size,
            max_batch_size=config.data.batch_size,
            noise_multiplier=privacy.noise_multiplier,
            delta=privacy.delta,
        )
        spent = check_budget(
            accountant, num_steps=t.num_steps, target_epsilon=privacy.target_epsilon, multiple=k
        )
        if is_main:
            log.info(
                "Private training (Poisson sampling, q=%.4g): epsilon=%.3g at delta=%g after %d steps.",
                accountant.sampling_rate,
                spent,
                privacy.delta,
                t.num_steps,
            )
    if is_main:
        write_record(config, run.spec, workdir)
    dataset = run.train_dataset() if privacy is None else _poisson_dataset(run, privacy.expected_batch_size)
    if k > 1:
        dataset = dataset.batch(k)  # [k, B, ...] per call.
    iterator = make_iterator(dataset)

    train_step = make_train_step(
        run.family.loss,
        ema_decay=t.ema_decay,
        ema_warmup=t.ema_warmup,
        grad_accum_steps=config.optim.grad_accum_steps,
        compute_dtype=COMPUTE_DTYPES[t.compute_dtype],
        remat_policy=REMAT_POLICIES[t.remat],
        privacy=privacy,
    )
    step_fn = parallel.compile_train_step(
        train_step, run.mesh, state_sharding=run.state_sharding, steps_per_call=k
    )
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=t.max_to_keep)
    first, compiling = None, None
    try:
        # A resumed run reads its state straight into the layout; only a fresh one compiles the init.
        abstract_state = run.abstract_state()
        restored = checkpointer.restore_latest(abstract_state)
        if restored is not None:
            state, data_state = restored
            set_data_position(iterator, data_state, int(state.step), checkpointer.directory)
            if is_main:
                log.info("Resumed from step %d in %s.", int(state.step), checkpointer.directory)
        else:
            if t.num_steps > 0:  # The step compiles from the state's shapes while the state is made.
                first = parallel.shard_batch(next(iterator), run.mesh, steps_per_call=k)
                compiling = parallel.BackgroundCompile(step_fn, abstract_state, first, run.step_key)
            state = run.init_state()
        step = int(state.step)
        if step >= t.num_steps:
            iterator.close()
            checkpointer.close()
            return _finished(run, state, workdir)
    except BaseException:
        iterator.close()
        checkpointer.close()
        raise

    # Records after the resumed step (written before a kill) are dropped, so no step appears twice.
    writer = MetricsWriter(workdir, enabled=is_main, resume_step=step)
    # The resolved config beside the curves: as text (a code block) and in the HParams tab.
    writer.write_texts(step, {"config": "```\n" + str(config) + "\n```"})
    writer.write_hparams(hparams_of(config), metrics=("train/loss", "eval/loss"))
    posthoc = posthoc_sigma_rels(config)
    posthoc_every = config.posthoc_ema.every if posthoc is not None else 0
    progress = None  # Started after the compilation, so that its rate and ETA count steps only.
    pending: list[dict] = []
    skipped = 0
    start, start_step = time.perf_counter(), step

    def flush() -> None:
        """Fetches pending metrics, checks them, logs their means."""
        nonlocal skipped, start, start_step
        if not pending:
            return
        records = jax.device_get(pending)
        pending.clear()
        merged = {key: np.concatenate([np.ravel(r[key]) for r in records]) for key in records[0]}
        bad = np.flatnonzero(merged["finite"] == 0)
        if bad.size and t.on_nonfinite == "stop":
            first = int(merged["step"][bad[0]]) + 1
            checkpointer.wait()
            last_good = checkpointer.all_steps()
            raise NonFiniteLossError(
                f"The loss, the gradients or the update became NaN/Inf at step {first}; stopped. The "
                f"last good checkpoint is step {last_good[-1] if last_good else 'none'} in "
                f"{checkpointer.directory}. Lower config.optim.lr, tighten config.optim.grad_clip, or set "
                "config.train.on_nonfinite='skip'."
            )
        if bad.size:
            skipped += int(bad.size)
            if is_main:
                log.warning("Skipped %d non-finite updates (steps %s).", bad.size, merged["step"][bad] + 1)
        good = merged["finite"] == 1
        scalars = {
            f"train/{key}": float(np.mean(v[good])) if good.any() else float("nan")
            for key, v in merged.items()
            if key not in ("step", "finite")
        }
        elapsed = time.perf_counter() - start
        scalars["train/steps_per_sec"] = (step - start_step) / max(elapsed, 1e-9)
        scalars["train/skipped_updates"] = skipped
        scalars["train/learning_rate"] = float(run.schedule(step - 1))  # The last update's.
        if accountant is not None:
            scalars["train/epsilon"] = accountant.epsilon(step)  # Spent by the steps so far, at delta.
        start, start_step = time.perf_counter(), step
        writer.write_scalars(step, scalars)
        progress.set_postfix(loss=f"{scalars['train/loss']:.4f}", refresh=False)

    def save() -> None:
        flush()  # Never save a state whose metrics have not been checked.
        checkpointer.save(state, iterator.get_state())

    try:
        with signals.defer():
            batches = (parallel.shard_batch(b, run.mesh, steps_per_call=k) for b in iterator)
            # Compiled ahead of the first step and timed apart, so that steps/s counts steps only.
            if compiling is not None:
                step_fn = compiling.result()
                compile_seconds = compiling.seconds
            else:
                first = next(batches)
                compile_start = time.perf_counter()
                step_fn = step_fn.lower(state, first, run.step_key).compile()
                compile_seconds = time.perf_counter() - compile_start
            writer.write_scalars(step, {"train/compile_seconds": compile_seconds})
            batches = itertools.chain([first], batches)
            progress = tqdm.tqdm(
                total=t.num_steps,
                initial=step,
                unit="step",
                disable=not is_main,
                dynamic_ncols=True,
                mininterval=1.0,
            )
            start = time.perf_counter()
            while step < t.num_steps:
                state, metrics = step_fn(state, next(batches), run.step_key)
                step += k
                pending.append(metrics)
                progress.update(k)
                stop = signals.pending is not None
                if step % t.log_every == 0:
                    flush()
                    # Processes stop together, at a step all of them reach: a signal seen by one
                    # process is acted on at the next logging step (every step on one process).
                    stop = any_process(stop)
                elif jax.process_count() > 1:
                    stop = False
                if posthoc_every and step % posthoc_every == 0:
                    _save_posthoc_snapshots(state, step, workdir, sigma_rels=posthoc)
                if t.eval_every and step % t.eval_every == 0 and step < t.num_steps:
                    flush()
                    _evaluate(run, state, step, workdir, writer)
                    start = time.perf_counter()  # Steps/s counts training steps, not the evaluation.
                if stop:
                    save()
                    checkpointer.wait()
                    signum, signals.pending = signals.pending or signal.SIGTERM, None  # Acted on.
                    return _stopped(signum, step, checkpointer.directory, state)
                if step % t.checkpoint_every == 0 and step < t.num_steps:
                    save()
            save()
            checkpointer.wait()
        signals.when = (
            f"after the final checkpoint (step {step}) was saved; rerun the same command to write the final "
            "pictures"
        )
        signals.check()  # A signal during the last steps: the final checkpoint is saved, stop here.
        _evaluate(run, state, step, workdir, writer)
    finally:
        if progress is not None:
            progress.close()
        writer.close()
        iterator.close()  # Its prefetch threads; a traceback would otherwise keep them alive.
        checkpointer.close()
    if is_main:
        _save_loss_curve(workdir)
    return state


def _save_posthoc_snapshots(
    state: TrainState, step: int, workdir: str, *, sigma_rels: tuple[float, ...]
) -> None:
    """Writes the post-hoc EMAs after `step` updates to `<workdir>/phema` (`gl_jax.train.posthoc_ema`).

    Every process takes part (the averages may be sharded across them); process 0 writes. A resumed run
    writes the steps after its checkpoint again, replacing what the interrupted run had written there.
    """
    tracked = find_power_ema_state(state.opt_state)
    trees = [jax.tree.map(parallel.host_array, tree) for tree in tracked.emas]
    if jax.process_index() == 0:
        snapshots = [
            Snapshot(step=step, sigma_rel=s, params=tree) for s, tree in zip(sigma_rels, trees, strict=True)
        ]
        save_snapshots(os.path.join(workdir, POSTHOC_DIR), snapshots)


def _poisson_dataset(run: Experiment, expected_batch_size: int):
    """Private training's batches: Poisson samples of the whole train split (one process; see
    `gl_jax.data.pipeline.make_poisson_dataset`), in `config.data.batch_size` slots with a mask."""
    data = run.config.data
    return make_poisson_dataset(
        run.arrays,
        run.spec,
        expected_batch_size=expected_batch_size,
        max_batch_size=data.batch_size,
        seed=run.config.seed,
        flip=data.flip,
        dequantize=data.dequantize,
    )


# What the accountant's numbers depend on besides the steps: a resumed private run must keep them.
_PRIVACY_KEYS = (
    "privacy.enabled",
    "privacy.noise_multiplier",
    "privacy.expected_batch_size",
    "data.batch_size",
)


def _check_privacy_matches(
    config: ml_collections.ConfigDict, saved: ml_collections.ConfigDict, *, workdir: str
) -> None:
    """Refuses to resume a run with another privacy mechanism: the accountant counts every step as this
    config's (a run trained without privacy cannot become private either)."""
    if dp_options(config) is None and dp_options(saved) is None:
        return
    for key in _PRIVACY_KEYS:
        section, name = key.split(".")
        mine, theirs = (
            config[section][name],
            saved.get(section, {}).get(name, False if name == "enabled" else None),
        )
        if mine != theirs:
            raise ValueError(
                f"config.{key}={mine!r} differs from the run in {workdir}, trained with "
                f"config.{key}={theirs!r}: its privacy accounting counts every step with the same mechanism. "
                "Resume with the run's own privacy settings, or use a new --workdir."
            )


def _stopped(signum: int, step: int, directory: str, state: TrainState) -> TrainState:
    """After the checkpoint a signal asked for: SIGTERM (pre-emption) returns, SIGINT raises."""
    name = signal.Signals(signum).name
    message = f"{name}: saved the checkpoint of step {step} in {directory} and stopped; rerun to resume."
    if signum == signal.SIGINT:
        raise Interrupted(signum, message)
    log.warning("%s", message)
    return state


def set_data_position(iterator, data_state: dict, step: int, directory: str) -> None:
    """Restores the data iterator's position, or names the checkpoint and the fix in one error."""
    try:
        iterator.set_state(data_state)
    except Exception as e:  # noqa: BLE001 - grain raises several kinds for a state of another pipeline.
        raise CheckpointError(
            f"The data position saved with step {step} in {directory} does not fit this config's data "
            f"pipeline ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); use the config "
            "that wrote the run, or a new --workdir."
        ) from None


def _finished(run: Experiment, state: TrainState, workdir: str) -> TrainState:
    """A run already at its last step: writes the final pictures that are missing, trains nothing."""
    step = int(state.step)
    is_main = jax.process_index() == 0
    if is_main:
        log.info(
            "The run in %s is finished (step %d of config.train.num_steps=%d); nothing to train. Raise "
            "config.train.num_steps to train on.",
            workdir,
            step,
            run.config.train.num_steps,
        )
    params, key, picture = _step_picture(run, state, step, workdir)
    # Process 0's answer for all (sampling is one program over every process's devices).
    missing = not os.path.exists(picture)
    if jax.process_count() > 1:
        missing = bool(multihost_utils.broadcast_one_to_all(np.asarray(missing)))
    if missing:
        run.sample_picture(params, key, picture, step=step)
    if is_main and not os.path.exists(os.path.join(workdir, "loss_curve.png")):
        _save_loss_curve(workdir)
    return state


def _save_loss_curve(workdir: str) -> None:
    records = read_metrics(workdir)
    train = [r for r in records if "train/loss" in r]
    evals = [r for r in records if "eval/loss" in r]
    if train:
        plots.save_loss_curve(
            os.path.join(workdir, "loss_curve.png"),
            np.array([r["step"] for r in train]),
            np.array([r["train/loss"] for r in train]),
            eval_steps=np.array([r["step"] for r in evals]),
            eval_losses=np.array([r["eval/loss"] for r in evals]),
        )


def _evaluate(run: Experiment, state: TrainState, step: int, workdir: str, writer: MetricsWriter) -> None:
    """Eval loss of the sampling parameters and the sample picture (a file, and in TensorBoard). Every
    process takes part (the parameters may be sharded across them); process 0 writes."""
    params, key, picture = _step_picture(run, state, step, workdir)
    eval_loss = run.eval_loss(params, key)
    if eval_loss is not None:
        writer.write_scalars(step, {"eval/loss": eval_loss})
    _, image = run.sample_picture(params, key, picture, step=step)
    writer.write_images(step, {"eval/samples": image})


def _step_picture(run: Experiment, state: TrainState, step: int, workdir: str) -> tuple[Any, jax.Array, str]:
    """The parameters, key and file of step `step`'s sample picture. The key is the same at every step
    (fixed validation noise), so the pictures of a run show one set of samples as training goes on."""
    params = state.ema_params if run.config.sample.use_ema else state.params
    return params, run.sample_key, os.path.join(workdir, "samples", f"step_{step:07d}.png")

"""`train_and_evaluate(config, workdir)` and `sample(config, workdir)`: the whole job around the one step.

The loop is family-agnostic: it builds the data pipeline, the family, the optimizer and the replicated
state, compiles the shared train step over the device mesh, and then only feeds batches, logs, writes
pictures and saves checkpoints. A restart resumes from the latest checkpoint (state and data position)
and reproduces the uninterrupted run bit for bit; SIGTERM saves a checkpoint and exits cleanly.

Multi-process jobs (`config.distributed`): every process runs this same loop on its own data shards and
saves and restores checkpoints together with the others; metrics, logs, progress and pictures come from
process 0 only. The global batch is the concatenation of `config.data.num_shards` shard batches, so a run
with a fixed number of shards computes the same numbers on any number of processes that divides it.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import time
from typing import Any

import grain
import jax
import ml_collections
import numpy as np
import tqdm
from jax.experimental import multihost_utils

from gl_jax import files
from gl_jax.data.pipeline import load_arrays, make_dataset, make_iterator
from gl_jax.data.sources import open_dataset
from gl_jax.eval import plots
from gl_jax.families.base import Family, build_family, make_family_optimizer
from gl_jax.interrupts import Interrupted, handle_signals
from gl_jax.train import distributed, parallel
from gl_jax.train.checkpoint import Checkpointer, CheckpointError
from gl_jax.train.optim import make_optimizer
from gl_jax.train.precision import COMPUTE_DTYPES
from gl_jax.train.state import TrainState
from gl_jax.train.step import REMAT_POLICIES, ema_init_weight, make_train_step
from gl_jax.train.validation import check_config
from gl_jax.train.workdir import WorkdirError, WorkdirLock, prepare_workdir
from gl_jax.train.writers import MetricsWriter, read_metrics

__all__ = [
    "train_and_evaluate",
    "sample",
    "reading_workdir",
    "restore_for_reading",
    "sampling_params",
    "Run",
    "NonFiniteLossError",
    "WorkdirError",
]

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """The loss or the gradients became NaN/Inf."""


def _check_devices(config: ml_collections.ConfigDict) -> None:
    """The checks that depend on the devices and processes (`check_config` did the rest)."""
    batch, accum = config.data.batch_size, config.optim.grad_accum_steps
    n_dev = jax.device_count()
    if batch % (n_dev * accum):
        raise ValueError(
            f"config.data.batch_size={batch} must be divisible by the {n_dev} devices times "
            f"config.optim.grad_accum_steps={accum} (every micro-batch is spread over all devices)."
        )
    shards, n_proc = _num_shards(config), jax.process_count()
    if shards % n_proc or batch % shards:
        raise ValueError(
            f"config.data.num_shards={shards} must be a multiple of the {n_proc} processes and divide "
            f"config.data.batch_size={batch}; set it to 0 for one shard per process."
        )


def _num_shards(config: ml_collections.ConfigDict) -> int:
    return config.data.num_shards or jax.process_count()


def _shard_seed(seed: int, shard: int) -> int:
    """Shuffle seed of a data shard: shard 0 keeps the run's seed (a one-shard run is as before), the
    others get independent ones, so shards are not shuffled in lockstep."""
    if shard == 0:
        return seed
    return int(np.random.SeedSequence([seed, shard]).generate_state(1)[0])


def _process_zero_first(fn, *args, **kwargs):
    """Runs `fn` on process 0, then on the others (a dataset is prepared once on a shared disk)."""
    if jax.process_count() == 1:
        return fn(*args, **kwargs)
    if jax.process_index() == 0:
        out = fn(*args, **kwargs)
    multihost_utils.sync_global_devices("gl_jax: process 0 ran " + fn.__name__)
    if jax.process_index() != 0:
        out = fn(*args, **kwargs)
    return out


def _local(tree):
    """This process's copy of replicated global arrays, so process 0 can evaluate and sample alone."""
    if jax.process_count() == 1:
        return tree
    return jax.tree.map(lambda x: x.addressable_data(0), tree)


def _any_process(flag: bool) -> bool:
    """Whether `flag` is set on any process (all processes must call this at the same step)."""
    if jax.process_count() == 1:
        return flag
    return bool(np.any(multihost_utils.process_allgather(np.asarray(flag))))


class Run:
    """The pieces a train or sample job shares: data spec, family, mesh, initial state."""

    def __init__(self, config: ml_collections.ConfigDict, *, load_train: bool):
        self.config = config
        self.spec, sources = _process_zero_first(
            open_dataset, config.data.name, data_dir=config.data.data_dir or None
        )
        self.shards: dict[int, dict[str, np.ndarray]] = {}
        self.arrays = None
        if load_train:
            # Process p reads shards p * S / P ... (p + 1) * S / P - 1 of S: disjoint, together the split.
            num, per = _num_shards(config), _num_shards(config) // jax.process_count()
            first = jax.process_index() * per
            self.shards = {
                s: load_arrays(sources["train"], self.spec, shard_index=s, shard_count=num)
                for s in range(first, first + per)
            }
            self.arrays = {
                k: np.concatenate([a[k] for a in self.shards.values()]) for k in self.shards[first]
            }
        self.eval_source = sources.get(config.data.eval_split)
        self._eval_batches = None
        self.family: Family = build_family(config, self.spec)
        # Compiled once per run, reused at every evaluation.
        self.sample_fn = jax.jit(self.family.sample, static_argnums=(2,))
        self.loss_fn = jax.jit(self.family.loss)
        optim = {k: v for k, v in config.optim.items() if k != "grad_accum_steps"}  # A step option.
        # A family may give parameter groups their own optimizers (a GAN's two players); `base` is the
        # config's optimizer with some options replaced.
        base = functools.partial(make_optimizer, **{**optim, "total_steps": config.train.num_steps})
        self.tx = make_family_optimizer(self.family, base)
        self.mesh = parallel.make_mesh()
        key = jax.random.key(config.seed)
        self.init_key, self.step_key, self.sample_key = jax.random.split(key, 3)

    def train_dataset(self) -> grain.MapDataset:
        """This process's part of each global batch: its shards' batches, concatenated `[B / P, ...]`."""
        data = self.config.data
        parts = [
            make_dataset(
                arrays,
                self.spec,
                batch_size=data.batch_size // _num_shards(self.config),
                seed=_shard_seed(self.config.seed, shard),
                flip=data.flip,
                dequantize=data.dequantize,
            )
            for shard, arrays in self.shards.items()
        ]
        if len(parts) == 1:
            return parts[0]
        # Batch i of every shard, side by side; one index, so the iterator state stays one number.
        return grain.MapDataset.range(len(parts[0])).map(
            lambda i: {k: np.concatenate([p[i][k] for p in parts]) for k in parts[0][i]}
        )

    def _create_state(self, key: jax.Array) -> TrainState:
        return TrainState.create(params=self.family.init(key), tx=self.tx)

    def init_state(self) -> TrainState:
        """The fresh state of step 0, replicated over the mesh."""
        return parallel.init_replicated(self._create_state, self.init_key, self.mesh)

    def abstract_state(self) -> TrainState:
        """`init_state`'s shapes and shardings, computing nothing: the target a checkpoint is read into."""
        return parallel.abstract_replicated(self._create_state, self.init_key, self.mesh)

    def eval_batches(self):
        """Up to 4 fixed batches of the eval split (read once)."""
        if self._eval_batches is None:
            arrays = load_arrays(self.eval_source, self.spec)
            size = min(len(arrays["x"]), self.config.data.batch_size)
            ds = make_dataset(arrays, self.spec, batch_size=size, seed=0, shuffle=False, repeat=False)
            self._eval_batches = [ds[i] for i in range(min(4, len(ds)))]
        return self._eval_batches

    def reference_points(self) -> np.ndarray | None:
        if self.spec.kind == "vector" and self.arrays is not None:
            return self.arrays["x"][:2000]
        return None


def _sample_picture(run: Run, params, key, path: str) -> np.ndarray:
    """Samples with this process's copy of `params`; process 0 writes the picture."""
    samples = np.asarray(jax.device_get(run.sample_fn(_local(params), key, run.config.sample.num_samples)))
    if jax.process_index() == 0:
        plots.save_samples(path, samples, reference=run.reference_points())
    return samples


def _eval_loss(run: Run, params, key) -> float | None:
    """Mean loss of the EMA parameters on up to 4 fixed batches of the eval split."""
    if run.eval_source is None:
        return None
    params = _local(params)
    losses = []
    for i, batch in enumerate(run.eval_batches()):
        keys = jax.random.split(jax.random.fold_in(key, i), len(batch["x"]))
        losses.append(float(run.loss_fn(params, batch, keys)[0]))
    return float(np.mean(losses))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
    """Trains `config` in `workdir`, resuming from its latest checkpoint.

    Writes `checkpoints/`, `metrics.jsonl`, `tensorboard/`, `samples/step_*.png` and `loss_curve.png`.
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
    _check_devices(config)
    t = config.train
    k = t.steps_per_call
    is_main = jax.process_index() == 0
    run = Run(config, load_train=True)
    dataset = run.train_dataset()
    if k > 1:
        dataset = dataset.batch(k)  # [k, B, ...] per call.
    iterator = make_iterator(dataset)

    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=t.max_to_keep)
    try:
        # A resumed run reads its state straight into the layout; only a fresh one compiles the init.
        restored = checkpointer.restore_latest(run.abstract_state())
        if restored is not None:
            state, data_state = restored
            _set_data_position(iterator, data_state, int(state.step), checkpointer.directory)
            if is_main:
                log.info("Resumed from step %d in %s.", int(state.step), checkpointer.directory)
        else:
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

    train_step = make_train_step(
        run.family.loss,
        ema_decay=t.ema_decay,
        ema_warmup=t.ema_warmup,
        grad_accum_steps=config.optim.grad_accum_steps,
        compute_dtype=COMPUTE_DTYPES[t.compute_dtype],
        remat_policy=REMAT_POLICIES[t.remat],
    )
    step_fn = parallel.compile_train_step(train_step, run.mesh, steps_per_call=k)
    # Records after the resumed step (written before a kill) are dropped, so no step appears twice.
    writer = MetricsWriter(workdir, enabled=is_main, resume_step=step)
    progress = tqdm.tqdm(
        total=t.num_steps, initial=step, unit="step", disable=not is_main, dynamic_ncols=True, mininterval=1.0
    )
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
            key: float(np.mean(v[good])) if good.any() else float("nan")
            for key, v in merged.items()
            if key not in ("step", "finite")
        }
        elapsed = time.perf_counter() - start
        scalars["steps_per_sec"] = (step - start_step) / max(elapsed, 1e-9)
        scalars["skipped_updates"] = skipped
        start, start_step = time.perf_counter(), step
        writer.write_scalars(step, scalars)
        progress.set_postfix(loss=f"{scalars['loss']:.4f}", refresh=False)

    def save() -> None:
        flush()  # Never save a state whose metrics have not been checked.
        checkpointer.save(state, iterator.get_state())

    try:
        with signals.defer():
            while step < t.num_steps:
                batch = parallel.shard_batch(next(iterator), run.mesh, steps_per_call=k)
                state, metrics = step_fn(state, batch, run.step_key)
                step += k
                pending.append(metrics)
                progress.update(k)
                stop = signals.pending is not None
                if step % t.log_every == 0:
                    flush()
                    # Processes stop together, at a step all of them reach: a signal seen by one
                    # process is acted on at the next logging step (every step on one process).
                    stop = _any_process(stop)
                elif jax.process_count() > 1:
                    stop = False
                if t.eval_every and step % t.eval_every == 0 and step < t.num_steps:
                    flush()
                    _evaluate(run, state, step, workdir, writer)
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
        progress.close()
        writer.close()
        iterator.close()  # Its prefetch threads; a traceback would otherwise keep them alive.
        checkpointer.close()
    if is_main:
        _save_loss_curve(workdir)
    return state


def _stopped(signum: int, step: int, directory: str, state: TrainState) -> TrainState:
    """After the checkpoint a signal asked for: SIGTERM (pre-emption) returns, SIGINT raises."""
    name = signal.Signals(signum).name
    message = f"{name}: saved the checkpoint of step {step} in {directory} and stopped; rerun to resume."
    if signum == signal.SIGINT:
        raise Interrupted(signum, message)
    log.warning("%s", message)
    return state


def _set_data_position(iterator, data_state: dict, step: int, directory: str) -> None:
    """Restores the data iterator's position, or names the checkpoint and the fix in one error."""
    try:
        iterator.set_state(data_state)
    except Exception as e:  # noqa: BLE001 - grain raises several kinds for a state of another pipeline.
        raise CheckpointError(
            f"The data position saved with step {step} in {directory} does not fit this config's data "
            f"pipeline ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); use the config "
            "that wrote the run, or a new --workdir."
        ) from None


def _finished(run: Run, state: TrainState, workdir: str) -> TrainState:
    """A run already at its last step: writes the final pictures that are missing, trains nothing."""
    step = int(state.step)
    if jax.process_index() != 0:
        return state
    log.info(
        "The run in %s is finished (step %d of config.train.num_steps=%d); nothing to train. Raise "
        "config.train.num_steps to train on.",
        workdir,
        step,
        run.config.train.num_steps,
    )
    params, key, picture = _step_picture(run, state, step, workdir)
    if not os.path.exists(picture):
        _sample_picture(run, params, key, picture)
    if not os.path.exists(os.path.join(workdir, "loss_curve.png")):
        _save_loss_curve(workdir)
    return state


def _save_loss_curve(workdir: str) -> None:
    records = read_metrics(workdir)
    train = [r for r in records if "loss" in r]
    evals = [r for r in records if "eval_loss" in r]
    if train:
        plots.save_loss_curve(
            os.path.join(workdir, "loss_curve.png"),
            np.array([r["step"] for r in train]),
            np.array([r["loss"] for r in train]),
            eval_steps=np.array([r["step"] for r in evals]),
            eval_losses=np.array([r["eval_loss"] for r in evals]),
        )


def _evaluate(run: Run, state: TrainState, step: int, workdir: str, writer: MetricsWriter) -> None:
    """Eval loss of the EMA parameters and a sample picture, on process 0 (the others go on training)."""
    if jax.process_index() != 0:
        return
    params, key, picture = _step_picture(run, state, step, workdir)
    eval_loss = _eval_loss(run, params, key)
    if eval_loss is not None:
        writer.write_scalars(step, {"eval_loss": eval_loss})
    _sample_picture(run, params, key, picture)


def _step_picture(run: Run, state: TrainState, step: int, workdir: str) -> tuple[Any, jax.Array, str]:
    """The parameters, key and file of step `step`'s sample grid (the same grid on a rerun)."""
    params = state.ema_params if run.config.sample.use_ema else state.params
    return (
        params,
        jax.random.fold_in(run.sample_key, step),
        os.path.join(workdir, "samples", f"step_{step:07d}.png"),
    )


def sampling_params(state: TrainState, config: ml_collections.ConfigDict) -> dict:
    """The parameters to sample or evaluate with: the EMA ones if `config.sample.use_ema`, else the raw ones.

    Warns when the EMA still holds much of the random initialisation: after n steps without warm-up its
    weight on the initial parameters is ema_decay^n (43% after 846 steps at 0.999), and samples from it are
    noise however well the raw parameters have trained.
    """
    if not config.sample.use_ema:
        return state.params
    step, decay = int(state.step), float(config.train.ema_decay)
    left = ema_init_weight(step, decay, warmup=bool(config.train.ema_warmup))
    if left > 0.1:
        log.warning(
            "Sampling with the EMA parameters at step %d: with config.train.ema_decay=%g, %.0f%% of them is "
            "still the random initialisation, so samples will be poor. Train longer (or train with "
            "--config.train.ema_warmup=True), or pass --config.sample.use_ema=False to use the raw "
            "parameters.",
            step,
            decay,
            100 * left,
        )
    return state.ema_params


def sample(config: ml_collections.ConfigDict, workdir: str) -> np.ndarray:
    """Draws `config.sample.num_samples` samples from the latest checkpoint in `workdir`.

    Reads the checkpoints without writing anything among them, so it may run while the same workdir
    trains. Writes `samples/samples.png` and `samples/samples.npz` (each replaced whole).

    Returns:
      The samples, `[N, ...]`.
    """
    with handle_signals() as signals:
        signals.when = "while sampling; rerun the command to sample"
        check_config(config, mode="sample")
        workdir = reading_workdir(workdir, purpose="sample from")
        distributed.initialize(config.distributed)
        run = Run(config, load_train=False)
        state = restore_for_reading(run, workdir, purpose="sample from")
        params = sampling_params(state, config)
        key = jax.random.fold_in(run.sample_key, int(state.step) + 1)
        samples = _sample_picture(run, params, key, os.path.join(workdir, "samples", "samples.png"))
        if jax.process_index() == 0:
            files.save_npz(
                os.path.join(workdir, "samples", "samples.npz"), samples=samples, step=int(state.step)
            )
            log.info("Sampled from the checkpoint of step %d.", int(state.step))
        return samples


def _no_checkpoint(workdir: str, purpose: str) -> CheckpointError:
    return CheckpointError(
        f"No checkpoint in {workdir}/checkpoints to {purpose}; train first with --mode train, or pass "
        "the --workdir of a trained run."
    )


def reading_workdir(workdir: str, *, purpose: str) -> str:
    """The absolute folder of a trained run that a sample or eval job reads (and writes pictures in).

    Raises:
      CheckpointError: it has no `checkpoints/` folder (the message says to train first).
      WorkdirError: it is empty or not writable.
    """
    if workdir and str(workdir).strip():
        folder = os.path.abspath(os.path.expanduser(workdir))
        if not os.path.isdir(os.path.join(folder, "checkpoints")):
            raise _no_checkpoint(folder, purpose)
    return prepare_workdir(workdir, create=False)


def restore_for_reading(run: Run, workdir: str, *, purpose: str) -> TrainState:
    """The latest sound checkpoint of `workdir`, read without writing in `checkpoints/`.

    Raises:
      CheckpointError: there is no checkpoint (the message says to train first) or none is sound.
    """
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True)
    try:
        restored = checkpointer.restore_latest(run.abstract_state())
    finally:
        checkpointer.close()
    if restored is None:
        raise _no_checkpoint(workdir, purpose)
    return restored[0]

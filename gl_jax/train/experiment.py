"""The run object: a config turned into what train, sample, stats and eval share.

`Experiment(config)` opens the dataset (preparing ours on first use), builds the family from
`config.family` (the family table, `gl_jax.families.FAMILIES`), the optimizer (the config's, or the
family's per-group one), the device mesh and the run's keys; it gives the fresh or abstract replicated
state, the data pipeline of this process's shards, a fixed eval set, the parameters to sample with, and
the latest sound checkpoint of a workdir for readers (`restore`). Every job (`gl_jax.train.loop`,
`gl_jax.eval.sample`, `gl_jax.eval.reference`, `gl_jax.eval.evaluate`) starts from one.
"""

from __future__ import annotations

import functools
import logging
import os

import grain
import jax
import ml_collections
import numpy as np
import optax
from jax.experimental import multihost_utils

from gl_jax import files, plots
from gl_jax.data.pipeline import load_arrays, make_dataset
from gl_jax.data.sources import open_dataset
from gl_jax.families import Family, build_family
from gl_jax.spec import DataSpec
from gl_jax.train import parallel, provenance
from gl_jax.train.checkpoint import Checkpointer, CheckpointError
from gl_jax.train.optim import make_optimizer, make_schedule
from gl_jax.train.posthoc_ema import posthoc_sigma_rels, power_ema_transform
from gl_jax.train.saved_params import load_params
from gl_jax.train.state import TrainState
from gl_jax.train.step import ema_init_weight
from gl_jax.train.workdir import prepare_workdir

__all__ = ["Experiment", "sampling_params", "check_devices", "any_process", "reading_workdir"]

log = logging.getLogger(__name__)


def check_devices(config: ml_collections.ConfigDict) -> None:
    """The checks that depend on the devices and processes (`check_config` did the rest)."""
    batch, accum = config.data.batch_size, config.optim.grad_accum_steps
    n_dev = jax.device_count()
    parallel.make_mesh(data=config.mesh.data, fsdp=config.mesh.fsdp)  # Sizes that fit the devices.
    if batch % (n_dev * accum):
        raise ValueError(
            f"config.data.batch_size={batch} must be divisible by the {n_dev} devices times "
            f"config.optim.grad_accum_steps={accum} (every micro-batch is spread over all devices)."
        )
    shards, n_proc = num_shards(config), jax.process_count()
    if shards % n_proc or batch % shards:
        raise ValueError(
            f"config.data.num_shards={shards} must be a multiple of the {n_proc} processes and divide "
            f"config.data.batch_size={batch}; set it to 0 for one shard per process."
        )


def num_shards(config: ml_collections.ConfigDict) -> int:
    """`config.data.num_shards`, or one shard per process when it is 0."""
    return config.data.num_shards or jax.process_count()


def _shard_seed(seed: int, shard: int) -> int:
    """Shuffle seed of a data shard: shard 0 shuffles with the run's seed itself (a one-shard run too), the
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


def any_process(flag: bool) -> bool:
    """Whether `flag` is set on any process (all processes must call this at the same step)."""
    if jax.process_count() == 1:
        return flag
    return bool(np.any(multihost_utils.process_allgather(np.asarray(flag))))


def sampling_params(state: TrainState, config: ml_collections.ConfigDict) -> dict:
    """The parameters to sample or evaluate with: the EMA ones if `config.sample.use_ema`, else the raw
    ones.

    Warns when the EMA still holds much of the random initialisation: after n steps without warm-up its
    weight on the initial parameters is ema_decay^n (43% after 846 steps at 0.999), and samples from it
    are noise however well the raw parameters have trained.
    """
    if not config.sample.use_ema:
        return state.params
    step, decay = int(state.step), float(config.train.ema_decay)
    left = ema_init_weight(step, decay, warmup=bool(config.train.ema_warmup))
    if left > 0.1:
        log.warning(
            "Sampling with the EMA parameters at step %d: with config.train.ema_decay=%g, %.0f%% of them "
            "is still the random initialisation, so samples will be poor. Train longer (or train with "
            "--config.train.ema_warmup=True), or pass --config.sample.use_ema=False to use the raw "
            "parameters.",
            step,
            decay,
            100 * left,
        )
    return state.ema_params


class Experiment:
    """What every job of one config shares: data spec and sources, family, optimizer, mesh, keys, state.

    Args:
      config: an experiment config (see `experiments/`), already checked (`check_config`).
      load_train: read this process's shards of the train split into memory (training does; the other
        jobs read what they need from `sources`).
      spec: the dataset's spec, when known (a trained run's record): the data is then not opened.
    """

    def __init__(self, config: ml_collections.ConfigDict, *, load_train: bool, spec: DataSpec | None = None):
        self.config = config
        if spec is None:
            self.spec, sources = _process_zero_first(
                open_dataset, config.data.name, data_dir=config.data.data_dir or None
            )
        else:  # A trained run's recorded spec: the data is not opened (nothing to read or sample against).
            if load_train:
                raise ValueError("Experiment(spec=...) opens no data, so it cannot load the train split.")
            self.spec, sources = spec, {}
        self.shards: dict[int, dict[str, np.ndarray]] = {}
        self.arrays = None
        if load_train:
            # Process p reads shards p * S / P ... (p + 1) * S / P - 1 of S: disjoint, together the split.
            num, per = num_shards(config), num_shards(config) // jax.process_count()
            first = jax.process_index() * per
            self.shards = {
                s: load_arrays(sources["train"], self.spec, shard_index=s, shard_count=num)
                for s in range(first, first + per)
            }
            self.arrays = {
                k: np.concatenate([a[k] for a in self.shards.values()]) for k in self.shards[first]
            }
        self.sources = sources
        self.eval_source = sources.get(config.data.eval_split)
        self._eval_batches = None
        self.mesh = parallel.make_mesh(data=config.mesh.data, fsdp=config.mesh.fsdp)
        key = jax.random.key(config.seed)
        self.init_key, self.step_key, self.sample_key = jax.random.split(key, 3)

    # Built on first use: `--mode stats` needs only the data (a latent run's autoencoder is not read).

    @functools.cached_property
    def family(self) -> Family:
        """The family of `config.family`, built at the config edge (`gl_jax.families.build`)."""
        return build_family(self.config, self.spec, load_params=load_params)

    @functools.cached_property
    def tx(self) -> optax.GradientTransformation:
        """The family's optimizer, built from `config.optim` (per parameter group where the family says),
        followed by the post-hoc EMA's tracking when `config.posthoc_ema.every` is set."""
        optim = {k: v for k, v in self.config.optim.items() if k != "grad_accum_steps"}  # A step option.
        base = functools.partial(make_optimizer, **{**optim, "total_steps": self.config.train.num_steps})
        tx = self.family.optimizer(base)
        if (sigma_rels := posthoc_sigma_rels(self.config)) is not None:
            # Last in the chain: it folds in the parameters after the whole update (frozen groups too).
            tx = optax.chain(tx, power_ema_transform(sigma_rels=sigma_rels))
        return tx

    @functools.cached_property
    def schedule(self) -> optax.Schedule:
        """The learning rate of `config.optim` after n updates (a GAN's players may set their own)."""
        o = self.config.optim
        return make_schedule(
            lr=o.lr,
            warmup_steps=o.warmup_steps,
            schedule=o.schedule,
            total_steps=self.config.train.num_steps,
            min_lr_ratio=o.min_lr_ratio,
        )

    @functools.cached_property
    def sample_fn(self):
        """`family.sample_one` spread over the mesh (`parallel.compile_sampler`: every sample from its own
        key, the same samples on any number of devices), compiled once per `num`; returns NumPy."""
        return parallel.compile_sampler(self.family.sample_one, self.mesh)

    @functools.cached_property
    def loss_fn(self):
        """`family.loss` compiled once per run over the mesh, for the eval loss (replicated outputs)."""
        return jax.jit(self.family.loss, out_shardings=parallel.replicated(self.mesh))

    def train_dataset(self) -> grain.MapDataset:
        """This process's part of each global batch: its shards' batches, concatenated `[B / P, ...]`."""
        data = self.config.data
        parts = [
            make_dataset(
                arrays,
                self.spec,
                batch_size=data.batch_size // num_shards(self.config),
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

    @functools.cached_property
    def state_sharding(self) -> TrainState:
        """The state's layout on the mesh, sharded over "fsdp" by `parallel.fsdp_spec` (replicated when
        config.mesh.fsdp is 1)."""
        # The family is built here, not inside the traced `_create_state`: building may read another
        # run's checkpoint (a latent run's autoencoder, a student's teacher), which needs concrete arrays.
        _ = self.family
        return parallel.state_shardings(jax.eval_shape(self._create_state, self.init_key), self.mesh)

    def init_state(self) -> TrainState:
        """The fresh state of step 0, born in its layout on the mesh."""
        return parallel.init_sharded(self._create_state, self.init_key, self.mesh, self.state_sharding)

    def abstract_state(self) -> TrainState:
        """`init_state`'s shapes and shardings, computing nothing: the target a checkpoint is read into
        (whatever mesh or number of processes saved it: the checkpoint is resharded as it is read)."""
        return parallel.abstract_sharded(self._create_state, self.init_key, self.state_sharding)

    def eval_batches(self):
        """Up to 4 fixed batches of the eval split (read once)."""
        if self._eval_batches is None:
            arrays = load_arrays(self.eval_source, self.spec)
            size = min(len(arrays["x"]), self.config.data.batch_size)
            ds = make_dataset(arrays, self.spec, batch_size=size, seed=0, shuffle=False, repeat=False)
            self._eval_batches = [ds[i] for i in range(min(4, len(ds)))]
        return self._eval_batches

    def reference_data(self, num: int) -> np.ndarray | None:
        """Up to `num` examples of the eval split as the model sees them (images in [-1, 1]), drawn beside
        or under the samples in pictures; None without an eval split."""
        if self.eval_source is None:
            return None
        x = np.concatenate([np.asarray(b["x"]) for b in self.eval_batches()])
        return x[:num]

    def caption(self, step: int, nfe: int | None) -> str:
        """What a sample picture shows: step, sampler (and its steps), network evaluations, which parameters.

        e.g. "step 2000 | euler_maruyama, 500 steps | 500 NFE | EMA parameters".
        """
        s = self.config.sample
        parts = [f"step {step}"]
        parts.append(f"{s.sampler}, {s.steps} steps" if self.family.takes_samplers else self.config.family)
        if nfe is not None:
            parts.append(f"{nfe} NFE")
        parts.append("EMA parameters" if s.use_ema else "raw parameters")
        return " | ".join(parts)

    def provenance(self, key: jax.Array, *, step: int, workdir: str, kind: str) -> dict:
        """The provenance record of `config.sample.num_samples` samples drawn with `key` from the checkpoint
        of `step` (`gl_jax.train.provenance.record`)."""
        return provenance.record(
            self.config,
            spec=self.spec,
            workdir=workdir,
            step=step,
            key=key,
            num=self.config.sample.num_samples,
            kind=kind,
        )

    def sample_picture(
        self, params, key, path: str, *, step: int, kind: str = "step picture"
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """`config.sample.num_samples` samples drawn over the whole mesh (all processes call this together);
        process 0 writes the captioned picture (image grids of the data and the samples, or a scatter plot
        over the data for vectors) to `path`, a file in `<workdir>/samples/`, with its provenance record
        (`gl_jax.train.provenance`) as a PNG text chunk and a sidecar `<path>.provenance.json`.

        Returns:
          The samples `[N, ...]`, and the picture (RGB uint8 `[rows, cols, 3]`; None on other processes).
        """
        num = self.config.sample.num_samples
        samples, nfe = self.sample_fn(params, key, num)
        picture = None
        if jax.process_index() == 0:
            caption = self.caption(step, nfe)
            reference = self.reference_data(num if samples.ndim == 4 else 2000)
            workdir = os.path.dirname(os.path.dirname(os.path.abspath(path)))
            record = self.provenance(key, step=step, workdir=workdir, kind=kind)
            picture = plots.save_samples(
                path, samples, reference=reference, caption=caption, metadata=provenance.png_metadata(record)
            )
            files.write_json(provenance.sidecar_path(path), record)
        return samples, picture

    def eval_loss(self, params, key) -> float | None:
        """Mean loss of `params` on up to 4 fixed batches of the eval split (None without the split); all
        processes call it together (the batches are the same on each, the parameters may be sharded)."""
        if self.eval_source is None:
            return None
        losses = []
        for i, batch in enumerate(self.eval_batches()):
            keys = jax.random.split(jax.random.fold_in(key, i), len(batch["x"]))
            losses.append(float(parallel.host_array(self.loss_fn(params, batch, keys)[0])))
        return float(np.mean(losses))

    def sampling_params(self, state: TrainState) -> dict:
        """`sampling_params(state, self.config)`."""
        return sampling_params(state, self.config)

    def restore(self, workdir: str, *, purpose: str, step: int | None = None) -> TrainState:
        """The latest sound checkpoint of `workdir`, read without writing in `checkpoints/` (a reader may
        run beside the training process).

        Args:
          workdir: from `reading_workdir`.
          purpose: what the reader does, for messages ("sample from", "evaluate").
          step: the checkpoint step to read; None: the latest sound one.

        Raises:
          CheckpointError: there is no checkpoint (the message says to train first) or none is sound.
        """
        checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True)
        try:
            restored = checkpointer.restore_latest(self.abstract_state(), step=step)
        finally:
            checkpointer.close()
        if restored is None:
            raise _no_checkpoint(workdir, purpose)
        return restored[0]


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

"""The base experiment config that every file in `experiments/` starts from.

Sections other than `model` and `sde` are locked: setting a key that does not exist (in a config file or
with `--config.a.b=value`) fails with the nearest valid key. `model` and `sde` are replaced whole by each
experiment and checked at the boundary, where they become typed objects (`gl_jax.families.build`).
"""

from __future__ import annotations

import ml_collections

__all__ = ["base_config", "student_of", "parse_variant", "consistency_config", "progressive_config"]


def base_config() -> ml_collections.ConfigDict:
    """Defaults shared by all experiments (score_sde's CIFAR-10 optimiser settings where they apply)."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.family = "score"

    c.data = ml_collections.ConfigDict()
    c.data.name = "sklearn_digits"
    c.data.data_dir = ""  # "" means $TFDS_DATA_DIR, else ~/tensorflow_datasets.
    c.data.batch_size = 128  # Global batch, split over processes and devices.
    c.data.flip = False
    c.data.dequantize = False
    c.data.eval_split = "test"
    # The global batch is one batch of each of this many disjoint shards of the train split, process p
    # reading its consecutive share of them; 0 means one per process. Fix it (to a multiple of every
    # process count you use) and the run is the same on 1 or several processes.
    c.data.num_shards = 0

    c.model = ml_collections.ConfigDict({"name": "small_unet"})
    c.sde = ml_collections.ConfigDict({"name": "vp", "beta_min": 0.1, "beta_max": 20.0})

    c.loss = ml_collections.ConfigDict()
    # "sigma2", "likelihood" (= "elbo"), "edm", "min_snr", "sigmoid" or "flow_matching" (losses.weightings).
    c.loss.weighting = "sigma2"
    # The weighting's keyword options, e.g. {"gamma": 5.0} for "min_snr" (gl_jax/losses/weightings.py).
    c.loss.weighting_options = ml_collections.ConfigDict()
    c.loss.time_sampling = "uniform"  # "uniform", "discrete", "log_snr" or "edm".
    # Its keyword options, e.g. {"p_mean": -0.4, "p_std": 1.0} for "edm" (EDM2's ImageNet-512 XS).
    c.loss.time_sampling_options = ml_collections.ConfigDict()
    # EDM2's learned uncertainty weighting (Karras et al. 2024, sec. 5): a small network u(lambda) trained
    # with the loss, which becomes l / exp(u) + u; its options (features, hidden, seed) in
    # uncertainty_options (gl_jax.losses.weightings.UncertaintyWeight).
    c.loss.uncertainty = False
    c.loss.uncertainty_options = ml_collections.ConfigDict()
    c.loss.reduce = "mean"
    c.loss.coupling = "independent"  # Or "ot": minibatch optimal-transport pairs of noise and data.
    # The coupling's keyword options, e.g. {"method": "scipy"} for "ot" (gl_jax/losses/coupling.py).
    c.loss.coupling_options = ml_collections.ConfigDict()
    c.loss.prediction = "eps"  # What the network predicts: "eps", "x0", "v" or "score".
    c.loss.noise_cond = "t"  # The network's conditioning input: "t", "999t", "log_sigma" or "sigma".

    c.optim = ml_collections.ConfigDict()
    c.optim.optimizer = "adam"
    c.optim.lr = 2e-4
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999
    c.optim.eps = 1e-8
    c.optim.weight_decay = 0.0
    c.optim.warmup_steps = 0
    c.optim.schedule = "constant"
    c.optim.min_lr_ratio = 0.0
    c.optim.grad_clip = 1.0
    c.optim.grad_accum_steps = 1  # Micro-batches per step: same update, 1/k of the activation memory.

    c.train = ml_collections.ConfigDict()
    c.train.num_steps = 1000
    c.train.steps_per_call = 1  # Fuse k steps into one compiled call (lax.scan).
    c.train.log_every = 50
    c.train.checkpoint_every = 500
    c.train.eval_every = 500  # Sample grid every this many steps (0: only at the end).
    c.train.max_to_keep = 3
    c.train.ema_decay = 0.999
    # min(ema_decay, (1 + n) / (10 + n)) at update n (TensorFlow's EMA warm-up): for short runs, where the
    # fixed decay would keep ema_decay^num_steps of the random initialisation in the average.
    c.train.ema_warmup = False
    c.train.on_nonfinite = "stop"  # "stop": stop with the step named; "skip": skip the update, go on.
    c.train.compute_dtype = "float32"  # "bfloat16": bf16 forward/backward, fp32 weights, loss, gradients.
    c.train.remat = "none"  # jax.checkpoint of the loss: "none", "full" (recompute all) or "dots".

    # Post-hoc EMA (EDM2 sec. 3, gl_jax/train/posthoc_ema.py): power-function EMAs of these relative widths
    # tracked in the optimizer state, saved every `every` steps to <workdir>/phema (0: not tracked); any
    # other width is reconstructed afterwards (`--mode eval` with config.eval.posthoc_sigma_rels).
    c.posthoc_ema = ml_collections.ConfigDict()
    c.posthoc_ema.every = 0
    c.posthoc_ema.sigma_rels = (0.05, 0.10)

    c.sample = ml_collections.ConfigDict()
    c.sample.sampler = "euler_maruyama"
    c.sample.steps = 500
    c.sample.num_samples = 64
    c.sample.use_ema = True
    c.sample.guidance = 1.0  # Classifier-free guidance weight for class-conditional models (1: none).
    # Guide only at noise levels sigma / alpha in (lo, hi] (Kynkaanniemi et al. 2024), e.g. (0.28, 5.42) for
    # EDM2-S on ImageNet-512; () guides at every level.
    c.sample.guidance_interval = ()
    # Autoguidance (Karras et al. 2024, "Guiding a diffusion model with a bad version of itself"): the
    # model guided with weight guide_weight by a weaker one, read from guide_checkpoint (a workdir, e.g.
    # this run's at an early step with guide_step, or a smaller run's; "": no guide). guide_model is that
    # run's config.model ({}: the same network as config.model); guide_use_ema reads its EMA.
    c.sample.guide_checkpoint = ""
    c.sample.guide_weight = 2.0
    c.sample.guide_step = -1
    c.sample.guide_use_ema = True
    c.sample.guide_model = ml_collections.ConfigDict()
    # Keep the denoised estimate in the data range while sampling images: "none", "static" (clip to
    # [-1, 1], Ho et al. 2020) or "dynamic" (Saharia et al. 2022); gl_jax/samplers/thresholding.py.
    c.sample.threshold = "none"
    # Keyword options of the sampler, e.g. {"predictor": "reverse_diffusion", "snr": 0.16} for "pc";
    # an experiment replaces the whole dict.
    c.sample.options = ml_collections.ConfigDict()

    # `--mode stats`: FID Inception statistics of a split of the data, the reference of FID, KID and
    # precision/recall in `--mode eval` (gl_jax/eval/reference.py); computed once, then read.
    c.stats = ml_collections.ConfigDict()
    c.stats.split = "train"
    # The .npz cache; "" means <data_dir>/gl_jax_stats/<data.name, "/" as "_">_<split>_inception.npz
    # (with "_first<N>" before "_inception" when max_images is N, and "_raw" for vector data).
    c.stats.path = ""
    c.stats.max_images = 0  # Use only the split's first this many images (0: all of them).
    c.stats.num_features = 10_000  # Features of the first this many images kept for KID, precision/recall.

    # `--mode eval`: the latest checkpoint's samples with each sampler setting against the reference
    # statistics, and test-set bits/dim; writes <workdir>/eval/report.json and a grid per setting.
    c.eval = ml_collections.ConfigDict()
    # The checkpoint to evaluate: -1 the newest (report in <workdir>/eval/), else that step's (report in
    # <workdir>/eval/step_<N>/; eval/metrics.jsonl gathers every evaluated step, e.g. for FID over training).
    c.eval.checkpoint_step = -1
    c.eval.num_samples = 10_000  # Samples per setting (published FIDs use 50k; fewer bias FID upwards).
    # Samples per sampler call, images per Inception call (also in --mode stats), examples per ODE solve.
    c.eval.batch_size = 250
    # Sampler settings by name (the name keys the report, the grid <name>.png and the sampling keys):
    # {"name": {"sampler": a key of gl_jax.samplers.SAMPLERS, "steps": int, "options": {keyword options}}};
    # an experiment replaces the whole dict. Empty: one setting "sample", config.sample's sampler.
    c.eval.settings = ml_collections.ConfigDict()
    c.eval.grid_size = 64  # Samples shown in each setting's grid.
    # A setting with options {"grid": "fitted"} samples on time steps fitted to the model (gl_jax/samplers/
    # time_steps.py) from this many starting points, fitted once per checkpoint into eval/time_steps.
    c.eval.fit_batch_size = 64
    # Post-hoc EMA widths to evaluate (the first setting, each width's parameters reconstructed from the
    # run's snapshots, config.posthoc_ema): FID per sigma_rel in the report and eval/posthoc_ema.png.
    c.eval.posthoc_sigma_rels = ()
    c.eval.kid_subsets = 100  # KID's random subsets and their size (Binkowski et al. 2018: 100 of 1000).
    c.eval.kid_subset_size = 1000
    c.eval.pr_neighbours = 3  # k of improved precision/recall (Kynkaanniemi et al. 2019).
    c.eval.is_splits = 10  # Inception Score splits; IS only when the Inception weights have a softmax head.
    # Examples of data.eval_split for bits/dim by the probability-flow ODE (diffusion families; uniform
    # dequantization of images); 0: skip.
    c.eval.bpd_examples = 1000
    c.eval.bpd_trace = "hutchinson"  # Divergence of the ODE likelihood: "hutchinson" or "exact" (small data).
    c.eval.bpd_rtol = 1e-5  # Tolerances of its adaptive solver.
    c.eval.bpd_atol = 1e-5

    # Multi-process jobs (see gl_jax/train/distributed.py); off: one process uses its local devices.
    c.distributed = ml_collections.ConfigDict()
    c.distributed.enabled = False
    c.distributed.coordinator_address = ""  # "host:port" of process 0; "" = $JAX_COORDINATOR_ADDRESS or
    # the cluster's (SLURM, Open MPI, TPU).
    c.distributed.num_processes = 0  # 0: from the cluster.
    c.distributed.process_id = -1  # -1: from the cluster.
    c.distributed.cpu_collectives = "gloo"  # How CPU devices of different processes talk: "gloo" or "mpi".
    c.distributed.initialization_timeout = 300  # Seconds to wait for every process to join.

    # The device mesh ("data", "fsdp"), gl_jax/train/parallel.py: fsdp devices share one copy of the
    # parameters, EMA and optimizer state (each holds ~1/fsdp of it), data copies of that group split the
    # batch. fsdp=1 is data parallelism; raise it when the state does not fit one device's memory.
    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1  # -1: the devices fsdp leaves.
    c.mesh.fsdp = 1

    # Differentially private training, DP-SGD (gl_jax/train/privacy.py). Each step draws every train
    # example independently with probability q = expected_batch_size / N (Poisson sampling) into
    # data.batch_size slots, the empty ones masked (a random data.batch_size of them kept when more are
    # drawn: set data.batch_size a few sqrt(expected_batch_size) above it); each example's gradient, its
    # loss averaged over `multiplicity` draws of time and noise (DPDM), is clipped to clip_norm; the sum
    # gets N(0, (noise_multiplier clip_norm)^2) noise and is divided by expected_batch_size. epsilon at
    # delta comes from dp_accounting's PLD accountant for exactly that sampling, is logged as
    # train/epsilon, and a run whose num_steps would spend more than target_epsilon is refused at the start.
    # One process (the whole split is sampled in one place); score, vae, autoregressive, latent (no gan).
    c.privacy = ml_collections.ConfigDict()
    c.privacy.enabled = False
    c.privacy.clip_norm = 1.0  # C.
    c.privacy.noise_multiplier = 1.0  # sigma.
    c.privacy.expected_batch_size = 0  # B, at most data.batch_size; must be set when enabled.
    c.privacy.multiplicity = 1  # K, DPDM's noise multiplicity: no privacy cost, K times the compute.
    c.privacy.delta = 1e-5
    c.privacy.target_epsilon = 10.0

    for name in (
        "data",
        "loss",
        "optim",
        "train",
        "sample",
        "stats",
        "eval",
        "distributed",
        "mesh",
        "privacy",
    ):
        c[name].lock()
    return c


def two_step_run(c: ml_collections.ConfigDict, *, batch_size: int, num_samples: int = 4) -> None:
    """Makes `c` a smoke run: 2 steps of `batch_size`, both logged, one checkpoint, `num_samples` samples.

    The training part of every config's `smoke` variant; each variant shrinks its own network beside it.
    """
    c.data.batch_size = batch_size
    c.train.num_steps = 2
    c.train.steps_per_call = 1
    c.train.log_every = 1
    c.train.checkpoint_every = 2
    c.train.eval_every = 0
    c.sample.num_samples = num_samples


def parse_variant(variant: str, name: str, *, allowed: tuple[str, ...] = ("smoke",)) -> set[str]:
    """The comma-separated parts of `variant` (e.g. "smoke"), each checked against `allowed`.

    Raises:
      ValueError: a part is not allowed (naming the config and the choices).
    """
    parts = {p for p in variant.split(",") if p}
    if parts - set(allowed):
        raise ValueError(f"Unknown variant {variant!r} of {name}; use '' or any of {sorted(allowed)}.")
    return parts


def student_of(teacher: str, *, smoke: bool) -> ml_collections.ConfigDict:
    """A few-step student's starting config: the teacher experiment's config (its smoke variant for a
    smoke run), so the student has the teacher's data, network, process and loss options, which it must
    to start from the teacher's parameters (`gl_jax.families.build.build_consistency`/`build_progressive`).

    Args:
      teacher: the teacher's experiment name, e.g. "toy_vp".
      smoke: start from the teacher's smoke variant (its small network and short run).
    """
    from gl_jax import experiments  # The configs package imports this module.

    c = experiments.get_config(f"{teacher}:smoke" if smoke else teacher)
    c.sample.options = ml_collections.ConfigDict()
    return c


def _few_step_run(
    c: ml_collections.ConfigDict, *, smoke: bool, num_steps: int, lr: float, warmup: int
) -> None:
    """The optimiser, EMA and run length a few-step student shares (the smoke run keeps the teacher's)."""
    c.optim.lr = lr
    c.optim.warmup_steps = warmup
    c.optim.schedule = "constant"
    c.train.ema_decay = 0.99
    c.eval.bpd_examples = 0
    if not smoke:
        c.train.num_steps = num_steps
        c.train.checkpoint_every = num_steps // 4
        c.train.eval_every = num_steps // 2


def consistency_config(
    teacher: str,
    *,
    method: str,
    smoke: bool,
    num_steps: int,
    lr: float,
    teacher_run: str = "",
    prediction: str = "",
) -> ml_collections.ConfigDict:
    """A consistency model (`config.family = "consistency"`) on a diffusion experiment's data and network.

    One-step sampling by default; `--mode eval` compares 1, 2 and 4 steps (`cm_1`, `cm_2`, `cm_4`). CD uses
    N = 18 levels and a target EMA of 0.95 (Song et al. 2023, CIFAR-10); CT and iCT their curricula
    (`gl_jax.families.consistency`). The smoke variant distils a random teacher.

    Args:
      teacher: the diffusion experiment whose data and network the student takes (`student_of`).
      method: "cd", "ct" or "ict".
      smoke: the teacher's smoke sizes and run length.
      num_steps: training updates (the curricula span them).
      lr: Adam's learning rate (constant).
      teacher_run: CD's teacher workdir.
      prediction: the student's parametrisation ("": the teacher's). "v" for an eps teacher: at high noise
        an eps-parametrised consistency function multiplies the network's error by sigma / alpha.
    """
    c = student_of(teacher, smoke=smoke)
    teacher_prediction = c.loss.prediction
    c.family = "consistency"
    if prediction:
        c.loss.prediction = prediction
    c.consistency = ml_collections.ConfigDict(dict(method=method, sigma_min=0.002, sigma_max=80.0))
    if method == "cd":
        c.consistency.update(dict(teacher_checkpoint=teacher_run, num_levels=18, target_decay=0.95))
        if prediction and prediction != teacher_prediction:  # The teacher is read as it was trained.
            c.consistency.teacher_prediction = teacher_prediction
        if smoke:
            c.consistency.update(dict(teacher_checkpoint="", allow_random_teacher=True))
    _few_step_run(c, smoke=smoke, num_steps=num_steps, lr=lr, warmup=0 if method == "cd" else 100)
    c.sample.sampler = "consistency"
    c.sample.steps = 1
    steps = (1,) if smoke else (1, 2, 4)
    c.eval.settings = ml_collections.ConfigDict(
        {f"cm_{k}": dict(sampler="consistency", steps=k) for k in steps}
    )
    return c


def progressive_config(
    teacher: str,
    *,
    smoke: bool,
    teacher_run: str,
    teacher_steps: int,
    rounds: int,
    num_steps: int,
    lr: float = 3e-4,
) -> ml_collections.ConfigDict:
    """Progressive distillation (`config.family = "progressive"`) of a diffusion experiment's eps-prediction
    network into a v-prediction student, all rounds in one run (`gl_jax.families.progressive`).

    The student samples with DDIM on the uniform grid at the last round's steps. The smoke variant distils
    a random teacher from 8 steps to 2.

    Args:
      teacher: the diffusion experiment whose data and network the student takes (`student_of`).
      smoke: the teacher's smoke sizes and run length.
      teacher_run: the teacher's workdir.
      teacher_steps: the teacher's DDIM steps.
      rounds: how many times they are halved (`num_steps` divided evenly between the rounds).
      num_steps: training updates.
      lr: Adam's learning rate (constant).
    """
    c = student_of(teacher, smoke=smoke)
    c.family = "progressive"
    c.loss.prediction = "v"
    if smoke:
        teacher_run, teacher_steps, rounds = "", 8, 2
    c.progressive = ml_collections.ConfigDict(
        dict(
            teacher_checkpoint=teacher_run,
            allow_random_teacher=smoke,
            teacher_prediction="eps",
            teacher_steps=teacher_steps,
            rounds=rounds,
        )
    )
    _few_step_run(c, smoke=smoke, num_steps=num_steps, lr=lr, warmup=0)
    student_steps = teacher_steps // 2**rounds
    c.sample.sampler = "ddim"
    c.sample.steps = student_steps
    c.sample.options = ml_collections.ConfigDict(dict(grid="uniform"))
    c.eval.settings = ml_collections.ConfigDict(
        {f"ddim_{student_steps}": dict(sampler="ddim", steps=student_steps, options=dict(grid="uniform"))}
    )
    return c

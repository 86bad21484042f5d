"""The published CIFAR-10 setups as configs: score_sde's table (Song et al. 2021) and EDM's (Karras 2022).

Each file under `experiments/cifar10_*.py` is one row, built here from the paper's hyper-parameters so the
rows differ only where the papers' configs differ. Every config has a `smoke` variant: the same family,
process, loss and sampler with a tiny network on generated 32x32x3 images (`synthetic_images/32x32x3`), so
it trains and samples on a CPU in seconds with no dataset.

Differences from score_sde, on purpose: data are scaled to [-1, 1] for every process (score_sde feeds VE
models [0, 1] data), so the VE configs double sigma_max to 100 to keep sigma_max at least the largest
pairwise distance of the data (Song & Ermon 2020, technique 1; ~110 for CIFAR-10 in [-1, 1] against
score_sde's 50 for [0, 1]); and the networks predict eps with score = -eps / sigma, which is score_sde's
`scale_by_sigma` output up to its sign.
"""

from __future__ import annotations

import ml_collections

from gl_jax.configs import base_config, two_step_run

__all__ = ["SCORE_SDE_ROWS", "score_sde_cifar10", "edm_cifar10", "published_targets"]

# Row name -> (process, network variant, continuous time). score_sde's configs/{ve,vp,subvp}/*.
SCORE_SDE_ROWS = {
    "ve/ncsnpp": ("ve", "ncsnpp-cifar10", False),
    "ve/ncsnpp_continuous": ("ve", "ncsnpp-cifar10", True),
    "ve/ncsnpp_deep_continuous": ("ve", "ncsnpp-deep-cifar10", True),
    "vp/ddpm": ("vp", "ddpm-cifar10", False),
    "vp/ddpm_continuous": ("vp", "ddpm-cifar10", True),
    "vp/ddpmpp": ("vp", "ddpmpp-cifar10", False),
    "vp/ddpmpp_continuous": ("vp", "ddpmpp-cifar10", True),
    "vp/ddpmpp_deep_continuous": ("vp", "ddpmpp-deep-cifar10", True),
    "subvp/ddpm_continuous": ("subvp", "ddpm-cifar10", True),
    "subvp/ddpmpp_continuous": ("subvp", "ddpmpp-cifar10", True),
    "subvp/ddpmpp_deep_continuous": ("subvp", "ddpmpp-deep-cifar10", True),
}

# Song et al. 2021, table 3 and the score_sde README: FID (50k samples, PC sampler) / FID of the ODE
# sampler / NLL in bits/dim (CIFAR-10 test set, uniform dequantization). None where not published.
_TARGETS = {
    "ve/ncsnpp": (2.45, None, None),
    "ve/ncsnpp_continuous": (2.38, None, None),
    "ve/ncsnpp_deep_continuous": (2.20, None, None),
    "vp/ddpm": (3.24, 3.37, 3.28),
    "vp/ddpm_continuous": (None, 3.69, 3.21),
    "vp/ddpmpp": (2.78, None, None),
    "vp/ddpmpp_continuous": (2.55, 3.93, 3.16),
    "vp/ddpmpp_deep_continuous": (2.41, 3.08, 3.13),
    "subvp/ddpm_continuous": (None, 3.56, 3.05),
    "subvp/ddpmpp_continuous": (2.61, 3.16, 3.02),
    "subvp/ddpmpp_deep_continuous": (2.41, 2.92, 2.99),
    # Karras et al. 2022, table 2 (35 NFE, Heun): config F of the VP (DDPM++) and VE (NCSN++) columns.
    "edm/vp": (1.97, None, None),
    "edm/ve": (1.98, None, None),
    "edm/vp_cond": (1.79, None, None),
}


def published_targets(row: str) -> dict[str, float]:
    """The published numbers a row targets: keys among `fid`, `fid_ode`, `nll_bpd`."""
    fid, fid_ode, nll = _TARGETS[row]
    out = {"fid": fid, "fid_ode": fid_ode, "nll_bpd": nll}
    return {k: v for k, v in out.items() if v is not None}


def _smoke(c: ml_collections.ConfigDict, *, tiny: str) -> None:
    """Shrinks a full config to seconds on a CPU: tiny network, generated data, a few steps."""
    c.data.name = "synthetic_images/32x32x3"
    c.model.variant = tiny
    two_step_run(c, batch_size=8)
    c.optim.warmup_steps = 0
    c.sample.steps = 4


def score_sde_cifar10(row: str, variant: str = "") -> ml_collections.ConfigDict:
    """One row of score_sde's CIFAR-10 table (Song et al. 2021, table 3; yang-song/score_sde configs).

    Shared settings (score_sde `configs/default_cifar10_configs.py`): batch 128, 1.3M iterations, Adam with
    lr 2e-4, 5,000 warm-up steps, gradient clipping at 1, random horizontal flips, sigma^2 weighting (no
    likelihood weighting). VE: sigma in [0.01, 100] (see the module docstring), EMA 0.999, summed loss,
    Fourier time embedding fed log sigma, PC sampling with reverse diffusion + Langevin (snr 0.16).
    VP/subVP: beta in [0.1, 20], EMA 0.9999, positional embedding fed 999 t; DDPM rows take the mean loss
    and ancestral sampling, DDPM++ rows the summed loss and Euler-Maruyama, no corrector. Non-continuous
    rows train on 1,000 discrete levels (DDPM's linear betas for VP, NCSN's geometric sigmas for VE).

    Args:
      row: a key of `SCORE_SDE_ROWS`, e.g. "vp/ddpmpp_continuous".
      variant: "" (the published config) or "smoke".

    Returns:
      The config; `c.targets` holds the published numbers.
    """
    if row not in SCORE_SDE_ROWS:
        raise ValueError(f"Unknown score_sde row {row!r}; choose one of {sorted(SCORE_SDE_ROWS)}.")
    process, network, continuous = SCORE_SDE_ROWS[row]
    ddpm_net = network.startswith("ddpm-")
    c = base_config()
    c.data.name = "cifar10"
    c.data.batch_size = 128
    c.data.flip = True
    c.model = ml_collections.ConfigDict(dict(name="unet", variant=network))
    if process == "ve":
        c.sde = ml_collections.ConfigDict(dict(name="ve", sigma_min=0.01, sigma_max=100.0))
        c.loss.noise_cond = "log_sigma"
        c.train.ema_decay = 0.999
        c.sample.sampler = "pc"
        c.sample.options = ml_collections.ConfigDict(
            dict(predictor="reverse_diffusion", corrector="langevin", snr=0.16)
        )
    else:
        if process == "vp" and not continuous:
            # DDPM's discrete chain: 1000 linear betas from 1e-4 to 0.02 (Ho et al. 2020), which the
            # VP SDE with beta in [0.1, 20] discretises.
            c.sde = ml_collections.ConfigDict(dict(name="ddpm", schedule="linear", num_steps=1000))
        else:
            c.sde = ml_collections.ConfigDict(dict(name=process, beta_min=0.1, beta_max=20.0))
        c.loss.noise_cond = "999t"
        c.train.ema_decay = 0.9999
        c.sample.sampler = "pc"
        predictor = "ancestral" if ddpm_net else "euler_maruyama"
        c.sample.options = ml_collections.ConfigDict(dict(predictor=predictor, corrector=None))
    c.loss.prediction = "eps"
    c.loss.weighting = "sigma2"
    c.loss.time_sampling = "uniform" if continuous else "discrete"
    c.loss.reduce = "mean" if ddpm_net and process == "vp" else "sum"
    c.optim.lr = 2e-4
    c.optim.warmup_steps = 5000
    c.optim.grad_clip = 1.0
    c.train.num_steps = 1_300_000
    c.train.log_every = 50
    c.train.checkpoint_every = 50_000
    c.train.eval_every = 50_000
    c.sample.steps = 1000
    c.sample.num_samples = 64
    c.targets = ml_collections.ConfigDict(published_targets(row))
    if variant == "smoke":
        _smoke(c, tiny="tiny-ncsnpp" if "ncsnpp" in network else "tiny")
    elif variant:
        raise ValueError(f"Unknown variant {variant!r} of {row}; use '' or 'smoke'.")
    return c


def edm_cifar10(arch: str, *, conditional: bool = False, variant: str = "") -> ml_collections.ConfigDict:
    """EDM's CIFAR-10 config F (Karras et al. 2022, table 2; NVlabs/edm `train.py --precond=edm`).

    The process alpha = 1, sigma = t in [0.002, 80]; the network predicts the denoiser through EDM's
    preconditioning (c_skip, c_out, c_in, c_noise with sigma_data = 0.5); ln sigma ~ N(-1.2, 1.2^2) with
    weight (sigma^2 + sigma_data^2) / (sigma sigma_data)^2. Training: 200M images at batch 512 (390k
    steps), Adam lr 1e-3 ramped up linearly over the first 10M images, no gradient clipping, EMA with a
    half-life of 0.5M images, dropout 0.13, horizontal flips (EDM's non-leaking augmentation pipeline is
    not reproduced). Sampling: Heun with 18 levels (35 NFE), rho = 7, deterministic.

    Args:
      arch: "vp" (DDPM++ network) or "ve" (NCSN++ network), EDM's column names.
      conditional: class-conditional with classifier-free guidance weight 1 (EDM's conditional row).
      variant: "" or "smoke".
    """
    if arch not in ("vp", "ve"):
        raise ValueError(f"Unknown EDM architecture {arch!r}; choose 'vp' (DDPM++) or 've' (NCSN++).")
    c = base_config()
    c.data.name = "cifar10"
    c.data.batch_size = 512
    c.data.flip = True
    network = "edm-ddpmpp-cifar10" if arch == "vp" else "edm-ncsnpp-cifar10"
    c.model = ml_collections.ConfigDict(
        dict(name="edm", variant=network, sigma_data=0.5, num_classes=10 if conditional else 0)
    )
    c.sde = ml_collections.ConfigDict(dict(name="edm", sigma_min=0.002, sigma_max=80.0))
    c.loss.prediction = "x0"
    c.loss.noise_cond = "sigma"
    c.loss.weighting = "edm"
    c.loss.time_sampling = "edm"
    c.loss.reduce = "mean"
    c.optim.lr = 1e-3
    c.optim.warmup_steps = 10_000_000 // 512
    c.optim.grad_clip = 0.0
    c.train.num_steps = 200_000_000 // 512
    # EMA half-life of 500k images at 512 per step: decay 0.5 ** (512 / 500_000).
    c.train.ema_decay = 0.5 ** (512 / 500_000)
    c.train.log_every = 100
    c.train.checkpoint_every = 20_000
    c.train.eval_every = 20_000
    c.sample.sampler = "edm"
    c.sample.steps = 18
    c.sample.num_samples = 64
    c.targets = ml_collections.ConfigDict(published_targets(f"edm/{arch}" + ("_cond" if conditional else "")))
    if variant == "smoke":
        _smoke(c, tiny="tiny" if arch == "vp" else "tiny-ncsnpp")
    elif variant:
        raise ValueError(f"Unknown variant {variant!r}; use '' or 'smoke'.")
    return c

"""Prints the compiled train step's temporary memory with and without accumulation, bf16 and remat.

  python -m tests.train._memory [--model unet|mlp]

Only compiles (`jax.jit(step).lower(...).compile().memory_analysis()`); nothing runs. The numbers quoted
in `gl_jax/train/step.py` come from this script on XLA:CPU.
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from gl_jax.families.diffusion import ScoreDiffusion
from gl_jax.models import ScoreMLP, SmallUNet
from gl_jax.sde import VPSDE
from gl_jax.train import TrainState, make_optimizer, make_train_step
from gl_jax.train.step import REMAT_POLICIES

VARIANTS = {
    "fp32": {},
    "accum2": {"grad_accum_steps": 2},
    "accum4": {"grad_accum_steps": 4},
    "bf16": {"compute_dtype": jnp.bfloat16},
    "remat_full": {"remat_policy": REMAT_POLICIES["full"]},
    "remat_dots": {"remat_policy": REMAT_POLICIES["dots"]},
    "bf16_accum4_remat_full": {
        "compute_dtype": jnp.bfloat16,
        "grad_accum_steps": 4,
        "remat_policy": REMAT_POLICIES["full"],
    },
}


def family(model: str) -> tuple[ScoreDiffusion, int]:
    """The digits U-Net of experiments/digits_vp.py (batch 128), or the toy MLP (batch 4096)."""
    if model == "unet":
        net = SmallUNet(channels=16, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=(4,))
        return ScoreDiffusion(model=net, sde=VPSDE(), data_shape=(8, 8, 1)), 128
    net = ScoreMLP(features=(256, 256, 256), embed_dim=64)
    return ScoreDiffusion(model=net, sde=VPSDE(), data_shape=(2,)), 4096


def temp_bytes(fam: ScoreDiffusion, batch_size: int, **options) -> int:
    """Temporary (activation and scratch) bytes of the compiled step, arguments and outputs excluded."""
    tx = make_optimizer(lr=1e-3, grad_clip=1.0)
    state = jax.eval_shape(lambda k: TrainState.create(params=fam.init(k), tx=tx), jax.random.key(0))
    batch = {"x": jax.ShapeDtypeStruct((batch_size, *fam.data_shape), np.float32)}
    key = jax.eval_shape(lambda: jax.random.key(0))
    step = jax.jit(make_train_step(fam.loss, **options), donate_argnums=(0,))
    return step.lower(state, batch, key).compile().memory_analysis().temp_size_in_bytes


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="unet", choices=("unet", "mlp"))
    args = parser.parse_args()
    fam, batch_size = family(args.model)
    base = None
    print(f"{args.model}, batch {batch_size}, backend {jax.default_backend()}")
    for name, options in VARIANTS.items():
        size = temp_bytes(fam, batch_size, **options)
        base = base or size
        print(f"  {name:24s} {size / 2**20:8.2f} MiB  ({size / base:.2f}x)")


if __name__ == "__main__":
    main()

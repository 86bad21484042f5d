"""XLA options gl_jax sets by default, before JAX starts its backend.

XLA:CPU hands convolutions to YNNPACK by default since jaxlib 0.10 or so. On the U-Nets gl_jax trains, its
own (Eigen) convolutions are faster: measured with `benchmarks/p3_train_throughput.py --attempts` and
`benchmarks/p4_sampler_speed.py` on 2 cores (2026-12-03), a DDPM CIFAR-10 train step 18-22 % and a DDIM
sampling step ~25 % less time. YNNPACK keeps the dots (the MLP-sized likelihood benchmark P2 is faster with
them). The `gl-jax` command applies `apply_defaults()` first thing; a script or notebook that wants the same
calls it before its first JAX computation.

XLA aborts the process on a flag it does not know, so the option is only added for the jaxlib versions it
was measured with (`VERIFIED_JAXLIB`), and never when XLA_FLAGS already sets it (the user's choice wins) or
when the environment has GL_JAX_XLA_DEFAULTS=0 (XLA's own defaults, YNNPACK convolutions included).
"""

from __future__ import annotations

import importlib.metadata
import os
import sys

__all__ = ["CPU_CONVOLUTIONS", "VERIFIED_JAXLIB", "apply_defaults", "default_flags"]

# Drop "individual convolution" from the fusion types XLA:CPU gives YNNPACK (the others stay).
CPU_CONVOLUTIONS = "--xla_cpu_experimental_ynn_fusion_type=-LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"
# (major, minor) versions of jaxlib that have the flag and were measured with it.
VERIFIED_JAXLIB = ((0, 10),)


def _jaxlib_version() -> tuple[int, int] | None:
    try:
        parts = importlib.metadata.version("jaxlib").split(".")
        return int(parts[0]), int(parts[1])
    except (importlib.metadata.PackageNotFoundError, ValueError, IndexError):
        return None


def default_flags(xla_flags: str, *, jaxlib: tuple[int, int] | None) -> str:
    """XLA_FLAGS with gl_jax's defaults added where the user has not set the same option.

    Args:
      xla_flags: the current value of XLA_FLAGS ("" when unset).
      jaxlib: jaxlib's (major, minor) version, None when unknown.

    Returns:
      The new value; `xla_flags` itself when nothing is added.
    """
    name = CPU_CONVOLUTIONS.split("=", 1)[0]
    if jaxlib not in VERIFIED_JAXLIB or name in xla_flags:
        return xla_flags
    return f"{xla_flags} {CPU_CONVOLUTIONS}".strip()


def apply_defaults() -> bool:
    """Adds gl_jax's XLA defaults to the environment's XLA_FLAGS; returns whether anything was added.

    Must run before JAX initialises its backend (the first computation or `jax.devices()`); after that
    XLA has read XLA_FLAGS and the change would do nothing, so it is refused with a RuntimeError.
    """
    if os.environ.get("GL_JAX_XLA_DEFAULTS", "1") == "0":
        return False
    current = os.environ.get("XLA_FLAGS", "")
    new = default_flags(current, jaxlib=_jaxlib_version())
    if new == current:
        return False
    if _backend_started():
        raise RuntimeError(
            "gl_jax.xla_flags.apply_defaults() ran after JAX started its backend; call it before the "
            "first JAX computation (or set XLA_FLAGS yourself)."
        )
    os.environ["XLA_FLAGS"] = new
    return True


def _backend_started() -> bool:
    if "jax" not in sys.modules:
        return False
    from jax._src import xla_bridge

    return bool(getattr(xla_bridge, "_backends", {}))

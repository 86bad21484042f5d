"""Loading peer implementations for comparison benchmarks.

k-diffusion's package `__init__` imports its models, evaluation and training utilities, which pull
torchvision (a multi-GB install here) and more. Its `sampling` module needs only torch, scipy, torchdiffeq,
torchsde and tqdm plus one helper (`append_dims`) from `k_diffusion.utils`, whose own imports include
torchvision and safetensors. We therefore load `utils.py` and `sampling.py` from the installed package
under a bare parent package, with empty stand-in modules for torchvision (and safetensors, if absent):
k-diffusion's sampling code runs unmodified.
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys
import types


def load_k_diffusion_sampling():
    """Returns k-diffusion's `sampling` module (installed with `pip install --no-deps k-diffusion`)."""
    if "k_diffusion.sampling" in sys.modules:
        return sys.modules["k_diffusion.sampling"]
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "k-diffusion is not installed: run `make bench-install` (pip install --no-deps k-diffusion)."
        )
    root = pathlib.Path(list(spec.submodule_search_locations)[0])
    stubs = ["torchvision", "torchvision.transforms", "torchvision.transforms.functional"]
    if importlib.util.find_spec("safetensors") is None:
        stubs.append("safetensors")
    for name in stubs:
        sys.modules.setdefault(name, types.ModuleType(name))
    package = types.ModuleType("k_diffusion")
    package.__path__ = [str(root)]
    sys.modules["k_diffusion"] = package
    for name in ("utils", "sampling"):
        module_spec = importlib.util.spec_from_file_location(f"k_diffusion.{name}", root / f"{name}.py")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[f"k_diffusion.{name}"] = module
        module_spec.loader.exec_module(module)
        setattr(package, name, module)
    return package.sampling

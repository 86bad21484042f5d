"""TFDS builders (prepared offline as array_record), the grain pipeline, and errors for missing data."""

import gzip
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from gl_jax.data import MissingDatasetError, load_arrays, make_dataset, make_iterator, open_dataset
from gl_jax.data.fashion_mnist import FashionMnist, read_idx
from gl_jax.data.toy import DISTRIBUTIONS


def test_sklearn_digits_builder(data_dir):
    from sklearn.datasets import load_digits

    spec, sources = open_dataset("sklearn_digits", data_dir=data_dir)
    assert spec.shape == (8, 8, 1) and spec.kind == "image" and spec.levels == 17 and spec.num_classes == 10
    assert spec.split_sizes == {"train": 1437, "test": 360}
    assert len(sources["train"]) == 1437 and len(sources["test"]) == 360
    ex = sources["test"][0]
    assert ex["image"].shape == (8, 8, 1) and ex["image"].dtype == np.uint8
    # Images are exactly scikit-learn's (the split is a permutation of them).
    train = load_arrays(sources["train"], spec)
    test = load_arrays(sources["test"], spec)
    ours = np.concatenate([train["x"], test["x"]])[..., 0].reshape(1797, -1)
    theirs = load_digits().images.astype(np.uint8).reshape(1797, -1)
    assert sorted(map(bytes, ours)) == sorted(map(bytes, theirs))
    assert ours.max() == 16 and train["label"].dtype == np.int32


def test_toy_builder_shapes_and_samples(data_dir):
    spec, sources = open_dataset("toy/gmm_16d", data_dir=data_dir)
    assert (
        spec.kind == "vector" and spec.shape == (16,) and spec.split_sizes == {"train": 20000, "test": 5000}
    )
    arrays = load_arrays(sources["train"], spec)
    assert arrays["x"].dtype == np.float32 and arrays["x"].shape == (20000, 16)
    # The stored samples are draws of the distribution: their mean log-density matches fresh draws'.
    gmm = DISTRIBUTIONS["gmm_16d"]
    fresh = gmm.sample_numpy(np.random.default_rng(123), 20000)
    np.testing.assert_allclose(
        float(np.mean(gmm.log_prob(arrays["x"]))), float(np.mean(gmm.log_prob(fresh))), atol=0.1
    )


def test_toy_log_densities_normalise():
    """Exact log-densities integrate to 1 on a grid (2-D mixture and checkerboard)."""
    grid = np.linspace(-4, 4, 801)
    xx, yy = np.meshgrid(grid, grid)
    pts = np.stack([xx.ravel(), yy.ravel()], 1).astype(np.float32)
    cell = (grid[1] - grid[0]) ** 2
    for name in ("gmm_2d", "checkerboard"):
        total = float(np.sum(np.exp(np.asarray(DISTRIBUTIONS[name].log_prob(pts)))) * cell)
        assert abs(total - 1.0) < 0.01, (name, total)
    samples = DISTRIBUTIONS["checkerboard"].sample_numpy(np.random.default_rng(0), 1000)
    assert np.all(np.isfinite(np.asarray(DISTRIBUTIONS["checkerboard"].log_prob(samples))))


def _write_idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_builder_on_idx_files(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    images = {"train": rng.integers(0, 256, (30, 28, 28)), "t10k": rng.integers(0, 256, (10, 28, 28))}
    for prefix, imgs in images.items():
        _write_idx(src / f"{prefix}-images-idx3-ubyte.gz", imgs)
        _write_idx(src / f"{prefix}-labels-idx1-ubyte.gz", np.arange(len(imgs)) % 10)
    builder = FashionMnist(source_dir=str(src), data_dir=str(tmp_path / "tfds"), file_format="array_record")
    builder.download_and_prepare()
    sources = builder.as_data_source()
    assert len(sources["train"]) == 30 and len(sources["test"]) == 10
    got = {int(k): None for k in range(10)}
    for i in range(10):
        ex = sources["test"][i]
        assert ex["image"].shape == (28, 28, 1) and ex["image"].dtype == np.uint8
        got[int(ex["label"])] = ex["image"][..., 0]
    # Labels are i % 10 and each test image is stored losslessly.
    for label, img in got.items():
        np.testing.assert_array_equal(img, images["t10k"][label])


def test_fashion_mnist_missing_files_error(tmp_path):
    builder = FashionMnist(
        source_dir=str(tmp_path), data_dir=str(tmp_path / "tfds"), file_format="array_record"
    )
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        builder.download_and_prepare()


def test_read_idx_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad.gz"
    with gzip.open(bad, "wb") as f:
        f.write(b"\x00\x00\x09\x01\x00\x00\x00\x02ab")
    with pytest.raises(ValueError, match="magic"):
        read_idx(bad)
    short = tmp_path / "short.gz"
    with gzip.open(short, "wb") as f:
        f.write(bytes([0, 0, 8, 1, 0, 0, 0, 5, 1, 2]))
    with pytest.raises(ValueError, match="truncated"):
        read_idx(short)


@pytest.mark.skipif(
    not os.path.exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"),
    reason="needs Debian's dataset-fashion-mnist, which .ci/run installs",
)
def test_fashion_mnist_real_files(data_dir):
    spec, sources = open_dataset("fashion_mnist", data_dir=data_dir)
    assert spec.shape == (28, 28, 1) and spec.levels == 256 and spec.num_classes == 10
    assert spec.split_sizes == {"train": 60000, "test": 10000}
    ex = sources["train"][0]
    assert ex["image"].shape == (28, 28, 1) and ex["image"].dtype == np.uint8 and 0 <= ex["label"] < 10


def test_missing_standard_dataset_error_is_fast_and_says_how(tmp_path):
    start = time.perf_counter()
    with pytest.raises(MissingDatasetError) as err:
        open_dataset("cifar10", data_dir=str(tmp_path))
    assert time.perf_counter() - start < 1.0
    message = str(err.value)
    assert "cifar10" in message and "tfds build cifar10 --file_format=array_record" in message
    assert str(tmp_path) in message


def test_pipeline_scaling_sharding_and_resume(data_dir):
    spec, sources = open_dataset("sklearn_digits", data_dir=data_dir)
    shards = [load_arrays(sources["train"], spec, shard_index=i, shard_count=3) for i in range(3)]
    whole = load_arrays(sources["train"], spec)
    # Disjoint shards that cover the split.
    assert sum(len(s["x"]) for s in shards) == len(whole["x"])
    np.testing.assert_array_equal(shards[1]["x"], whole["x"][1::3])

    plain = make_dataset(whole, spec, batch_size=64, seed=0, shuffle=False)
    b = plain[0]
    np.testing.assert_allclose(b["x"], whole["x"][:64].astype(np.float32) / 16 * 2 - 1)
    assert b["x"].min() == -1.0 and b["x"].max() == 1.0
    deq = make_dataset(whole, spec, batch_size=64, seed=0, shuffle=False, dequantize=True)[0]["x"]
    k = (deq + 1) / 2 * 17  # In [k, k + 1) for pixel value k.
    assert np.all(np.floor(k) == whole["x"][:64]) and np.all(deq > -1) and np.all(deq < 1)
    flipped = make_dataset(whole, spec, batch_size=64, seed=0, shuffle=False, flip=True)[0]["x"]
    same = np.all(flipped == b["x"], axis=(1, 2, 3))
    mirrored = np.all(flipped == b["x"][:, :, ::-1], axis=(1, 2, 3))
    assert np.all(same | mirrored) and 10 < mirrored.sum() < 54

    ds = make_dataset(whole, spec, batch_size=64, seed=0)
    it = make_iterator(ds)
    for _ in range(30):  # Past the first epoch (22 batches).
        next(it)
    state = it.get_state()
    expected = [next(it)["x"] for _ in range(3)]
    resumed = make_iterator(ds)
    resumed.set_state(state)
    for e in expected:
        np.testing.assert_array_equal(next(resumed)["x"], e)
    # Epochs are reshuffled: epoch 2 does not repeat epoch 1's order.
    assert not np.array_equal(ds[0]["x"], ds[22]["x"])


def test_batch_larger_than_data_is_named(data_dir):
    spec, sources = open_dataset("sklearn_digits", data_dir=data_dir)
    with pytest.raises(ValueError, match="config.data.batch_size"):
        make_dataset(load_arrays(sources["test"], spec), spec, batch_size=1000, seed=0)


def test_tensorflow_is_never_imported(data_dir):
    code = (
        "import sys, numpy as np\n"
        "import gl_jax.main, gl_jax.train.loop\n"
        "from gl_jax.data import open_dataset, load_arrays, make_dataset, make_iterator\n"
        "spec, src = open_dataset('sklearn_digits')\n"
        "next(make_iterator(make_dataset(load_arrays(src['train'], spec), spec, batch_size=8, seed=0)))\n"
        "bad = sorted(m for m in sys.modules if m == 'tensorflow' or m.startswith('tensorflow.'))\n"
        "assert not bad, bad\n"
        "print('NO_TF')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TFDS_DATA_DIR": data_dir},
    )
    assert proc.returncode == 0 and "NO_TF" in proc.stdout, proc.stderr[-2000:]


def test_synthetic_images_builder(data_dir):
    """Generated in a standard shape, labelled, deterministic, and the classes differ on average."""
    from gl_jax.data.synthetic import synthetic_image

    spec, sources = open_dataset("synthetic_images/32x32x3", data_dir=data_dir)
    assert spec.shape == (32, 32, 3) and spec.levels == 256 and spec.num_classes == 10
    assert spec.split_sizes == {"train": 1024, "test": 256}
    train = load_arrays(sources["train"], spec)
    assert train["x"].shape == (1024, 32, 32, 3) and train["x"].dtype == np.uint8
    # The stored images are the generator's (TFDS stores them in its own order).
    rng = np.random.default_rng(0)
    regenerated = [synthetic_image(rng, i % 10, (32, 32, 3)) for i in range(1024)]
    assert sorted(map(bytes, train["x"])) == sorted(map(bytes, regenerated))
    # The class is in each image's grating (orientation, frequency, colour; the phase is random): a
    # nearest-centroid classifier on Fourier magnitudes tells the test classes apart.
    test = load_arrays(sources["test"], spec)

    def features(x):
        return np.abs(np.fft.fft2(x.astype(np.float64) / 255.0, axes=(1, 2))).reshape(len(x), -1)

    centroids = np.stack([features(train["x"][train["label"] == k]).mean(0) for k in range(10)])
    dists = ((features(test["x"])[:, None] - centroids[None]) ** 2).sum(-1)  # [N, 10]
    assert np.mean(dists.argmin(1) == test["label"]) > 0.9
    with pytest.raises(ValueError, match="synthetic_images/<name>"):
        open_dataset("synthetic_images", data_dir=data_dir)

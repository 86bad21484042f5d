"""Usefulness of synthetic data (`gl_jax.eval.usefulness`) and the usefulness and memorisation entries of
`--mode eval`: the fixed classifier learns what is learnable, CAS of the real training data is the
real-data classifier's accuracy, CAS of label-shuffled data is chance, the augmentation curve has its shape,
copies of training images are memorised and noise is not, and a class-conditional smoke model's report
holds the new entries.

The classifier tests train with fewer steps than `CLASSIFIER` (one options object, so one compilation).
"""

import dataclasses
import json

import numpy as np
import pytest

from gl_jax import pixels
from gl_jax.eval import usefulness as u
from gl_jax.eval.memorisation import memorised_fraction, novelty
from tests.conftest import load_config

FAST = dataclasses.replace(u.CLASSIFIER, steps=300)


@pytest.fixture(scope="module")
def digits():
    """scikit-learn's digits as images in [-1, 1], split 1437 / 360 as the dataset's train and test."""
    from sklearn.datasets import load_digits

    data = load_digits()
    order = np.random.default_rng(0).permutation(len(data.target))
    x = pixels.to_signed(data.images.astype(np.uint8)[order, :, :, None], levels=17)  # [N, 8, 8, 1]
    y = data.target[order].astype(np.int32)
    return (x[:1437], y[:1437]), (x[1437:], y[1437:])


def test_classifier_learns_separable_data():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(10, 20)) * 4.0  # [classes, D], far apart against unit noise
    y = rng.integers(0, 10, 2000)
    x = centres[y] + rng.normal(size=(2000, 20))
    fit = u.train_classifier(x[:1500], y[:1500], num_classes=10, options=FAST)
    assert u.accuracy(fit, x[1500:], y[1500:]) > 0.97
    assert u.predict(fit, x[1500:1503]).shape == (3,)


def test_cas_of_the_training_data_is_the_real_classifiers_accuracy(digits):
    (train_x, train_y), (test_x, test_y) = digits
    real = u.accuracy(u.train_classifier(train_x, train_y, num_classes=10, options=FAST), test_x, test_y)
    assert real > 0.9
    # "Perfect samples": the training data itself. The same data in another order is another draw of the
    # batches, so the score agrees within the test split's noise, not bit for bit.
    order = np.random.default_rng(1).permutation(len(train_y))
    cas = u.classification_accuracy_score(
        train_x[order], train_y[order], test_x, test_y, num_classes=10, options=FAST
    )
    noise = np.sqrt(real * (1 - real) / len(test_y))
    assert abs(cas - real) < 4 * noise + 1e-9
    # Samples with their labels shuffled carry no class information: chance (0.1, noise 0.016).
    shuffled = np.random.default_rng(2).permutation(train_y)
    chance = u.classification_accuracy_score(train_x, shuffled, test_x, test_y, num_classes=10, options=FAST)
    assert abs(chance - 0.1) < 0.06


def test_augmentation_curve_shape_and_real_only_rising(digits):
    (train_x, train_y), (test_x, test_y) = digits
    samples, labels = train_x[:200], train_y[:200]  # Stand-ins for synthetic samples.
    curve = u.augmentation_curve(
        train_x, train_y, samples, labels, test_x, test_y, num_classes=10, options=FAST
    )
    assert curve.fractions.tolist() == [0.01, 0.1, 1.0]
    assert 10 <= curve.num_real[0] < 20 and curve.num_real[1] < 160 and curve.num_real[2] == 1437
    assert curve.real.shape == curve.real_and_synthetic.shape == (3,)
    assert curve.real[0] < curve.real[1] < curve.real[2] + 0.01
    assert np.all((curve.real_and_synthetic >= 0) & (curve.real_and_synthetic <= 1))
    # 200 more correctly labelled digits help the classifier that had 10.
    assert curve.real_and_synthetic[0] > curve.real[0] + 0.1


def test_stratified_subsets_are_nested_and_cover_every_class():
    labels = np.repeat(np.arange(5), [3, 50, 100, 7, 40])
    small, large = u.stratified_subset(labels, 0.05), u.stratified_subset(labels, 0.5)
    assert set(labels[small]) == set(range(5)) and set(small) <= set(large)
    assert np.bincount(labels[large]).tolist() == [2, 25, 50, 4, 20]  # round(0.5 n_c): 1.5 -> 2, 3.5 -> 4
    assert u.class_balanced_labels(6, 3).tolist() == [0, 0, 1, 1, 2, 2]
    with pytest.raises(ValueError, match="equal classes"):
        u.class_balanced_labels(7, 3)


def test_memorised_fraction_of_copies_is_one_and_of_noise_zero(digits):
    import types

    (train_x, _), _ = digits
    spec = types.SimpleNamespace(kind="image", levels=17)
    stored = u.as_stored(train_x, spec, dequantized=False)  # The levels the dataset stores.
    np.testing.assert_array_equal(u.as_model_input(stored, spec), train_x)
    copies = stored[::7]
    ratio = novelty(copies.astype(np.float32), stored.astype(np.float32)).ratio
    assert memorised_fraction(ratio) == 1.0 and memorised_fraction(ratio, threshold=1.0) == 1.0
    noise = u.as_stored(np.random.default_rng(0).normal(size=(200, 8, 8, 1)), spec, dequantized=False)
    ratio = novelty(noise.astype(np.float32), stored.astype(np.float32)).ratio
    assert memorised_fraction(ratio) == 0.0 and memorised_fraction(ratio, threshold=1.0) < 0.02


def test_unconditional_family_refuses_labels():
    import jax
    import jax.numpy as jnp

    from gl_jax.families import build_family
    from gl_jax.spec import DataSpec

    spec = DataSpec("sklearn_digits", "image", (8, 8, 1), 17, 10, {"train": 1437, "test": 360})
    family = build_family(load_config("digits_vp", "smoke"), spec)
    assert not family.conditional
    with pytest.raises(ValueError, match="models no class labels"):
        family.sample_conditional({}, jax.random.key(0), jnp.zeros((2,), jnp.int32))


def test_eval_report_of_a_conditional_model_has_usefulness_and_memorisation(tmp_path, data_dir, monkeypatch):
    from gl_jax.eval import evaluate
    from gl_jax.eval.inception import InceptionOutputs
    from gl_jax.train.checkpoint import Checkpointer
    from gl_jax.train.experiment import Experiment
    from gl_jax.train.writers import read_metrics

    config = load_config("digits_vp_cond", "smoke")
    config.data.data_dir = data_dir
    config.eval.bpd_examples = 0
    config.stats.path = str(tmp_path / "stats.npz")
    # The initial state as the run's checkpoint: training is tested elsewhere, and the entries are about
    # what is done with samples, not how good they are.
    checkpointer = Checkpointer(str(tmp_path / "checkpoints"))
    checkpointer.save(Experiment(config, load_train=False).init_state(), {"index": 0})
    checkpointer.close()
    # Pixels as features: this test is about the new entries, not the FID Inception.
    raw = lambda x: InceptionOutputs(pool=np.asarray(x, np.float32).reshape(len(x), -1), logits=None)
    monkeypatch.setattr(evaluate, "feature_extractor", lambda config, spec: raw)
    monkeypatch.setattr(u, "CLASSIFIER", dataclasses.replace(FAST, steps=100))
    report = evaluate.evaluate(config, str(tmp_path))

    useful = report["usefulness"]
    assert useful["num_samples"] == 40 and useful["per_class"] == 4 and useful["num_test"] == 360
    # Network evaluations: classifier-free guidance evaluates the conditional and unconditional model at each
    # of the 5 steps (guidance 2, no interval).
    assert config.sample.guidance != 1 and not config.sample.guidance_interval
    assert useful["sampling"]["guidance"] == config.sample.guidance and useful["nfe"] == 2 * 5
    assert 0 <= useful["cas"] <= 1 and useful["real_accuracy"] > 0.8
    assert useful["augmentation"]["num_real"] == [10, 143, 1437]
    assert len(useful["augmentation"]["real_and_synthetic"]) == 3 and useful["classifier"]["steps"] == 100
    entry = report["settings"]["dpm_solver_pp_5"]
    assert 0 <= entry["closer_than_training"] <= 1 and 0 <= entry["memorised_fraction"] <= 1
    memorisation = report["memorisation"]
    assert memorisation["setting"] == "dpm_solver_pp_5" and memorisation["picture"] == "nearest.png"
    assert memorisation["num_train"] == 1437 and 0.2 < memorisation["test"]["closer_than_training"] < 0.8
    assert (tmp_path / "eval" / "nearest.png").stat().st_size > 500
    assert json.loads((tmp_path / "eval" / "report.json").read_text())["usefulness"]["cas"] == useful["cas"]
    (record,) = read_metrics(str(tmp_path), jsonl="eval/metrics.jsonl")
    assert record["eval/cas"] == useful["cas"] and record["eval/real_accuracy"] == useful["real_accuracy"]
    assert "eval/augmentation/real_and_synthetic_1pct" in record
    assert record["eval/dpm_solver_pp_5/closer_than_training"] == entry["closer_than_training"]

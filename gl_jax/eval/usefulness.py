"""Usefulness of synthetic data: the Classification Accuracy Score and the augmentation curve.

The Classification Accuracy Score (CAS; Ravuri & Vinyals 2019, "Classification Accuracy Score for
Conditional Generative Models") trains a classifier on class-conditional samples only and reports its
accuracy on the real test split. A model whose samples of class c look like class c *and* cover its
variety scores close to the same classifier trained on real data; a model that drops modes, or draws
convincing but wrong classes, scores lower even where FID is good (their table 1: BigGAN-deep's CAS is
43 % top-1 on ImageNet against 73 % for real data). The augmentation curve asks the practical question
behind it: with 1 %, 10 % or 100 % of the real training split, does adding the synthetic samples to the
real ones raise test accuracy?

Every number here comes from one fixed classifier (`CLASSIFIER`: its architecture, optimiser, steps,
batch and seed never change), so a CAS of one model compares with another's and with the real-data row.
The classifier is deliberately small (a two-layer perceptron, `SmallClassifier`) and trained for
a fixed number of steps on batches drawn with replacement, whatever the size of its training set: a score
measures the data, not a tuning of the classifier to it. Real-only subsets are stratified by class (at
least one example of every class) and nested (the 1 % subset lies inside the 10 % one), so real-only
accuracy rises with the fraction up to the noise of the test split.

Inputs are arrays as the models see them (images `[N, H, W, C]` in [-1, 1], vectors `[N, D]`) and integer
labels `[N]`; `--mode eval` (`gl_jax.eval.evaluate`) and `benchmarks/usefulness.py` draw the samples
with `class_sampler` and quantize synthetic images to the data's pixel levels first (`as_stored`), as if
saved as image files, so real and synthetic images differ only in content.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from gl_jax import pixels
from gl_jax.families import Family
from gl_jax.spec import DataSpec
from gl_jax.train import parallel

__all__ = [
    "AugmentationCurve",
    "CLASSIFIER",
    "Classifier",
    "ClassifierOptions",
    "SmallClassifier",
    "accuracy",
    "as_model_input",
    "as_stored",
    "augmentation_curve",
    "FRACTIONS",
    "class_balanced_labels",
    "class_sampler",
    "classification_accuracy_score",
    "predict",
    "stratified_subset",
    "train_classifier",
    "usefulness",
]

# The fractions of the real training split of the augmentation curve.
FRACTIONS = (0.01, 0.1, 1.0)


@dataclasses.dataclass(frozen=True)
class ClassifierOptions:
    """The fixed classifier: its size, optimiser and schedule.

    Attributes:
      hidden: widths of the hidden ReLU layers.
      steps: Adam steps, whatever the training set's size.
      batch_size: examples per step, drawn uniformly with replacement.
      learning_rate: Adam's peak learning rate, decayed to 0 over `steps` by a cosine.
      seed: seed of the initialisation and of the batches.
      chunk: steps per compiled call (their batches are gathered on the host first).
      eval_batch: test examples per compiled call.
    """

    hidden: Sequence[int] = (256, 256)
    steps: int = 2000
    batch_size: int = 128
    learning_rate: float = 1e-3
    seed: int = 0
    chunk: int = 100
    eval_batch: int = 500


# The one classifier of every reported CAS and augmentation curve.
CLASSIFIER = ClassifierOptions()


class SmallClassifier(nn.Module):
    """`apply({"params": p}, x) -> logits [B, num_classes]` of examples `x` `[B, ...]` (flattened).

    A multilayer perceptron, also for images: a fixed classifier is what makes scores comparable, and on a
    CPU the gradients of XLA's convolutions cost one to two orders of magnitude more than the dense layers
    of the same network, which would put a CAS of Fashion-MNIST out of a CPU user's reach.

    Attributes:
      num_classes: number of classes.
      hidden: the hidden layers' widths.
    """

    num_classes: int
    hidden: Sequence[int] = CLASSIFIER.hidden

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape(len(x), -1)  # [B, D]
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
        return nn.Dense(self.num_classes)(x)  # [B, num_classes]


class Classifier(NamedTuple):
    """A trained classifier.

    Attributes:
      module: the network.
      params: its parameters.
      options: how it was trained.
    """

    module: SmallClassifier
    params: Any
    options: ClassifierOptions


def _options(options: ClassifierOptions | None) -> ClassifierOptions:
    # Looked up at call time (not as a default argument), so a test may patch the module's CLASSIFIER.
    return CLASSIFIER if options is None else options


@functools.lru_cache(maxsize=16)
def _compiled(num_classes: int, options: ClassifierOptions):
    """The network, its optimiser and the compiled (init, train chunk, logits) for one class count."""
    module = SmallClassifier(num_classes, hidden=options.hidden)
    schedule = optax.cosine_decay_schedule(options.learning_rate, options.steps)
    tx = optax.adam(schedule)

    def loss_fn(params, x, y):
        logits = module.apply({"params": params}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @jax.jit
    def init(key, x):
        params = module.init(key, x)["params"]
        return params, tx.init(params)

    @jax.jit
    def train_chunk(params, opt_state, xs, ys):  # xs [chunk, B, ...], ys [chunk, B]
        def step(carry, batch):
            params, opt_state = carry
            loss, grads = jax.value_and_grad(loss_fn)(params, *batch)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), (xs, ys))
        return params, opt_state, losses

    logits = jax.jit(lambda params, x: module.apply({"params": params}, x))
    return module, init, train_chunk, logits


def train_classifier(
    x: np.ndarray, y: np.ndarray, *, num_classes: int, options: ClassifierOptions | None = None
) -> Classifier:
    """Trains the fixed classifier on examples `x` `[N, ...]` with labels `y` `[N]` (N >= 1).

    Args:
      x: images `[N, H, W, C]` or vectors `[N, D]`, float.
      y: integer labels in [0, num_classes).
      num_classes: number of classes.
      options: the classifier; None: `CLASSIFIER`, the one every reported score uses.

    Returns:
      The trained `Classifier`.
    """
    options = _options(options)
    x = np.asarray(x, np.float32)
    y = np.asarray(y, np.int32)
    if len(x) != len(y) or not len(x):
        raise ValueError(f"Need as many labels as examples, at least one: got {len(x)} and {len(y)}.")
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"Labels must lie in [0, {num_classes}), got [{y.min()}, {y.max()}].")
    module, init, train_chunk, _ = _compiled(num_classes, options)
    params, opt_state = init(jax.random.key(options.seed), x[:1])
    rng = np.random.default_rng(options.seed)
    index = rng.integers(0, len(x), size=(options.steps, options.batch_size))  # [steps, B]
    for start in range(0, options.steps, options.chunk):
        idx = index[start : start + options.chunk]
        if len(idx) < options.chunk:  # One compiled shape: the last chunk is padded, and only once.
            idx = np.concatenate([idx, index[: options.chunk - len(idx)]])
        params, opt_state, _ = train_chunk(params, opt_state, x[idx], y[idx])
    return Classifier(module, params, options)


def predict(classifier: Classifier, x: np.ndarray) -> np.ndarray:
    """The classifier's predicted labels `[N]` of `x` `[N, ...]`."""
    num_classes = classifier.module.num_classes
    *_, logits = _compiled(num_classes, classifier.options)
    x = np.asarray(x, np.float32)
    size = classifier.options.eval_batch
    out = []
    for start in range(0, len(x), size):
        part = x[start : start + size]
        pad = size - len(part)
        if pad:
            part = np.concatenate([part, np.zeros((pad, *part.shape[1:]), part.dtype)])
        out.append(np.asarray(jnp.argmax(logits(classifier.params, part), axis=-1))[: size - pad])
    return np.concatenate(out) if out else np.zeros((0,), np.int32)


def accuracy(classifier: Classifier, x: np.ndarray, y: np.ndarray) -> float:
    """Fraction of `x` `[N, ...]` the classifier labels as `y` `[N]`."""
    return float(np.mean(predict(classifier, x) == np.asarray(y)))


def classification_accuracy_score(
    samples: np.ndarray,
    sample_labels: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    num_classes: int,
    options: ClassifierOptions | None = None,
) -> float:
    """CAS: test accuracy of the fixed classifier trained on class-conditional samples only.

    Args:
      samples: `[N, ...]` samples of the model, drawn for `sample_labels` `[N]`.
      sample_labels: the classes they were drawn for.
      test_x, test_y: the real test split.
      num_classes: number of classes.
      options: the classifier; None: `CLASSIFIER`.

    Returns:
      The accuracy on the real test split, in [0, 1]; compare with the same classifier trained on real
      data (`usefulness` reports both).
    """
    classifier = train_classifier(samples, sample_labels, num_classes=num_classes, options=options)
    return accuracy(classifier, test_x, test_y)


def class_balanced_labels(num: int, num_classes: int) -> np.ndarray:
    """Labels `[num]`: 0, 0, ..., 1, 1, ... with `num // num_classes` of each class (num a multiple)."""
    if num % num_classes:
        raise ValueError(f"{num} samples do not split into {num_classes} equal classes.")
    return np.repeat(np.arange(num_classes, dtype=np.int32), num // num_classes)


def stratified_subset(labels: np.ndarray, fraction: float, *, seed: int = 0) -> np.ndarray:
    """Indices of a class-stratified subset: round(fraction n_c), at least 1, of each class c's n_c.

    The order within each class is one fixed permutation (of `seed`), so a smaller fraction's subset lies
    inside a larger one's.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}.")
    labels = np.asarray(labels)
    order = np.random.default_rng(seed).permutation(len(labels))
    out = []
    for c in np.unique(labels):
        members = order[labels[order] == c]
        out.append(members[: max(1, round(fraction * len(members)))])
    return np.sort(np.concatenate(out))


class AugmentationCurve(NamedTuple):
    """Test accuracy against the amount of real training data, without and with synthetic samples.

    Attributes:
      fractions: `[F]` fractions of the real training split.
      num_real: `[F]` real examples used at each fraction.
      real: `[F]` accuracy of the classifier trained on the real subset alone.
      real_and_synthetic: `[F]` accuracy trained on the real subset plus every synthetic sample.
    """

    fractions: np.ndarray
    num_real: np.ndarray
    real: np.ndarray
    real_and_synthetic: np.ndarray


def augmentation_curve(
    train_x: np.ndarray,
    train_y: np.ndarray,
    samples: np.ndarray,
    sample_labels: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    num_classes: int,
    fractions: Sequence[float] = FRACTIONS,
    options: ClassifierOptions | None = None,
) -> AugmentationCurve:
    """Test accuracy of the fixed classifier on real subsets (`stratified_subset`) with and without the
    synthetic samples added, one pair of trainings per fraction.

    Args:
      train_x, train_y: the real training split.
      samples, sample_labels: the synthetic examples and the classes they were drawn for.
      test_x, test_y: the real test split.
      num_classes: number of classes.
      fractions: fractions of the real training split, each in (0, 1].
      options: the classifier; None: `CLASSIFIER`.
    """
    train_x, samples = np.asarray(train_x, np.float32), np.asarray(samples, np.float32)
    num_real, real, mixed = [], [], []
    for fraction in fractions:
        idx = stratified_subset(train_y, fraction)
        x, y = train_x[idx], np.asarray(train_y)[idx]
        num_real.append(len(idx))
        fit = train_classifier(x, y, num_classes=num_classes, options=options)
        real.append(accuracy(fit, test_x, test_y))
        x, y = np.concatenate([x, samples]), np.concatenate([y, sample_labels])
        fit = train_classifier(x, y, num_classes=num_classes, options=options)
        mixed.append(accuracy(fit, test_x, test_y))
    return AugmentationCurve(
        fractions=np.asarray(fractions, np.float64),
        num_real=np.asarray(num_real, np.int64),
        real=np.asarray(real),
        real_and_synthetic=np.asarray(mixed),
    )


def usefulness(
    train_x: np.ndarray,
    train_y: np.ndarray,
    samples: np.ndarray,
    sample_labels: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    num_classes: int,
    fractions: Sequence[float] = FRACTIONS,
    options: ClassifierOptions | None = None,
) -> dict[str, Any]:
    """CAS, the real-data classifier beside it, and the augmentation curve, as one JSON-ready entry.

    Returns:
      `{"cas", "real_accuracy" (all of the real training split), "real_accuracy_same_size" (a stratified
      real subset as large as the synthetic set, when it is smaller than the split, else the same as
      real_accuracy), "num_samples", "num_real", "num_test", "augmentation": {"fractions", "num_real",
      "real", "real_and_synthetic"}, "classifier": the options}`.
    """
    options = _options(options)
    curve = augmentation_curve(
        train_x,
        train_y,
        samples,
        sample_labels,
        test_x,
        test_y,
        num_classes=num_classes,
        fractions=tuple(fractions),
        options=options,
    )
    cas = classification_accuracy_score(
        samples, sample_labels, test_x, test_y, num_classes=num_classes, options=options
    )
    full = [i for i, f in enumerate(curve.fractions) if f == 1.0]
    if full:
        real = float(curve.real[full[0]])
    else:
        real = accuracy(
            train_classifier(train_x, train_y, num_classes=num_classes, options=options), test_x, test_y
        )
    same_size = real
    if len(samples) < len(train_x):
        idx = stratified_subset(train_y, len(samples) / len(train_x))
        fit = train_classifier(
            np.asarray(train_x)[idx], np.asarray(train_y)[idx], num_classes=num_classes, options=options
        )
        same_size = accuracy(fit, test_x, test_y)
    return {
        "cas": cas,
        "real_accuracy": real,
        "real_accuracy_same_size": same_size,
        "num_samples": int(len(samples)),
        "num_real": int(len(train_x)),
        "num_test": int(len(test_x)),
        "augmentation": {
            "fractions": [float(f) for f in curve.fractions],
            "num_real": [int(n) for n in curve.num_real],
            "real": [float(a) for a in curve.real],
            "real_and_synthetic": [float(a) for a in curve.real_and_synthetic],
        },
        "classifier": dataclasses.asdict(options),
    }


# --- Drawing class-conditional samples, and storing them as the dataset stores examples. ---


def class_sampler(family: Family, mesh: jax.sharding.Mesh):
    """Samples of one class at a time from a class-conditional family, spread over `mesh`.

    Returns:
      `fn(params, key, label, num) -> (x [num, ...], nfe)`: `num` samples of class `label`, sample i from
      its own key `fold_in(key, i)` (`gl_jax.train.parallel.compile_sampler`: the same samples on any
      number of devices); the label is an argument, so one compilation serves every class.
    """

    def counted(tree: dict, key: jax.Array, index: jax.Array):
        del index  # Every sample of the one class.
        return family.sample_conditional(
            tree["params"], key, jnp.reshape(tree["label"], (1,)).astype(jnp.int32)
        )

    draw = parallel.compile_sampler(counted, mesh)
    return lambda params, key, label, num: draw({"params": params, "label": jnp.int32(label)}, key, num)


def as_stored(x: np.ndarray, spec: DataSpec, *, dequantized: bool) -> np.ndarray:
    """Samples in the data's range as the dataset stores examples: images as their uint8 pixel levels (as
    if written as image files; `dequantized` says which pixel convention the model samples in, as
    `config.data.dequantize`), vectors as float32."""
    x = np.asarray(x, np.float32)
    if spec.kind != "image":
        return x
    return pixels.to_levels(x, levels=spec.levels, dequantized=dequantized).astype(np.uint8)


def as_model_input(stored: np.ndarray, spec: DataSpec) -> np.ndarray:
    """Stored examples (real or `as_stored` samples) as the classifier takes them: images in [-1, 1]."""
    if spec.kind != "image":
        return np.asarray(stored, np.float32)
    return pixels.to_signed(np.asarray(stored), levels=spec.levels)

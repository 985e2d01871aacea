"""The cifar10 `fast` network: its size, its data-dependent initialisation and its optimizer."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from training import fastnet
from training.tasks import get_task


@pytest.fixture(scope="module")
def model() -> keras.Model:
    task = get_task("cifar10")
    return task.arch("fast").build(task.preprocessing.input_shape, 10)


def correlated_images(n: int = 400, seed: int = 0) -> np.ndarray:
    """Smooth, colour-correlated images: neighbouring pixels and channels far from independent."""
    rng = np.random.default_rng(seed)
    base = rng.random((n, 8, 8, 1)).repeat(4, axis=1).repeat(4, axis=2)
    tint = rng.random((n, 1, 1, 3))
    return (0.7 * base + 0.3 * tint + 0.05 * rng.random((n, 32, 32, 3))).astype(np.float32)


def test_parameter_count_and_output(model: keras.Model):
    # whitening 2x2x3x24 + 24 (frozen), convs 24-64-64-256-256-256-256, BN biases, head 256x10
    assert model.count_params() == 1_973_944
    assert sum(int(np.prod(v.shape)) for v in model.trainable_variables) == 1_971_328
    assert model.output_shape == (None, 10)
    assert not model.get_layer(fastnet.WHITEN).trainable


def test_whitening_decorrelates_patches_to_unit_variance():
    images = correlated_images()
    kernel, bias = fastnet.whitening_filters(images, eps=1e-8)
    assert kernel.shape == (2, 2, 3, 24)
    patches = np.stack(
        [images[:, i : 31 + i, j : 31 + j] for i in range(2) for j in range(2)], axis=3
    ).reshape(-1, 12)
    outputs = patches @ kernel.reshape(12, 24)[:, :12] + bias[:12]
    np.testing.assert_allclose(outputs.mean(axis=0), 0, atol=1e-3)
    np.testing.assert_allclose(np.cov(outputs, rowvar=False), np.eye(12), atol=1e-2)
    np.testing.assert_allclose(kernel[..., 12:], -kernel[..., :12])


def test_prepare_sets_the_stem_and_identity_filters(model: keras.Model):
    fastnet.prepare(model, correlated_images(50))
    kernel = model.get_layer("block2_conv2").get_weights()[0]  # 256 -> 256
    assert np.array_equal(kernel[1, 1], np.eye(256, dtype=np.float32))
    assert not kernel[0].any() and not kernel[2].any()
    widening = model.get_layer("block2_conv1").get_weights()[0]  # 64 -> 256
    assert np.array_equal(widening[1, 1, :, :64], np.eye(64, dtype=np.float32))
    assert widening[..., 64:].std() > 0  # the extra outputs keep their random init


def test_triangular_schedule_rises_then_falls():
    schedule = fastnet.Triangular(1.0, 100)
    values = [float(schedule(step)) for step in (0, 23, 100, 200)]
    np.testing.assert_allclose(values, [0.2, 1.0, 0.07, 0.07], atol=1e-6)


def test_norm_biases_learn_faster():
    beta = keras.Variable(np.zeros(2, np.float32), name="beta")
    kernel = keras.Variable(np.zeros(2, np.float32), name="kernel")
    optimizer = fastnet.BiasScaledSGD(0.1, bias_lr_scale=64.0)
    optimizer.apply([np.ones(2, np.float32)] * 2, [beta, kernel])
    np.testing.assert_allclose(beta.numpy(), 64 * kernel.numpy())
    np.testing.assert_allclose(kernel.numpy(), -0.1)

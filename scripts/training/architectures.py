"""Keras architectures by name: the tutorials' own, layer for layer, and our better ones.

Every builder takes `(input_shape, n_classes)` and returns an uncompiled `keras.Model` whose
output is a softmax over the classes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
from keras import layers

Builder = Callable[[tuple[int, int, int], int], keras.Model]


def mnist_tutorial_000(shape: tuple[int, int, int], n: int) -> keras.Model:
    """Tutorial 000, MNIST: one same-padded conv, pool, dense 100 (628,630 parameters)."""
    return keras.Sequential(
        [
            keras.Input(shape),
            layers.Conv2D(
                32, 3, padding="same", activation="relu", kernel_initializer="he_uniform"
            ),
            layers.MaxPooling2D(2),
            layers.Flatten(),
            layers.Dense(100, activation="relu", kernel_initializer="he_uniform"),
            layers.Dropout(0.2),
            layers.Dense(n, activation="softmax"),
        ],
        name="mnist_tutorial_000",
    )


def mnist_tutorial_004(shape: tuple[int, int, int], n: int) -> keras.Model:
    """Tutorial 004, MNIST: conv32, conv64, pool, dense 128 with dropout (1,199,882 parameters)."""
    return keras.Sequential(
        [
            keras.Input(shape),
            layers.Conv2D(32, 3, activation="relu"),
            layers.Conv2D(64, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Dropout(0.25),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
            layers.Dropout(0.5),
            layers.Dense(n, activation="softmax"),
        ],
        name="mnist_tutorial_004",
    )


def cifar10_tutorial_000(shape: tuple[int, int, int], n: int) -> keras.Model:
    """Tutorial 000, CIFAR-10: two conv+pool blocks, dense 100 (430,102 parameters)."""
    return keras.Sequential(
        [
            keras.Input(shape),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(2, strides=2),
            layers.Conv2D(64, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(2, strides=2),
            layers.Flatten(),
            layers.Dense(100, activation="relu"),
            layers.Dropout(0.2),
            layers.Dense(n, activation="softmax"),
        ],
        name="cifar10_tutorial_000",
    )


def cifar10_tutorial_003(shape: tuple[int, int, int], n: int) -> keras.Model:
    """Tutorial 003, CIFAR-10: three double-conv BN blocks, dense 128 + BN (552,874 parameters)."""
    stack: list[layers.Layer] = [keras.Input(shape)]
    for filters, dropout in ((32, 0.3), (64, 0.5), (128, 0.5)):
        for _ in range(2):
            stack += [
                layers.Conv2D(filters, 3, padding="same", activation="relu"),
                layers.BatchNormalization(),
            ]
        stack += [layers.MaxPooling2D(2), layers.Dropout(dropout)]
    stack += [
        layers.Flatten(),
        layers.Dense(128, activation="relu"),
        layers.BatchNormalization(),
        layers.Dropout(0.5),
        layers.Dense(n, activation="softmax"),
    ]
    return keras.Sequential(stack, name="cifar10_tutorial_003")


def homer_bart_tutorial_001(shape: tuple[int, int, int], n: int) -> keras.Model:
    """Tutorial 001 as its printed summary shows it: 3x (conv32 valid + pool), 2x dense 3137."""
    stack: list[layers.Layer] = [keras.Input(shape)]
    for _ in range(3):
        stack += [layers.Conv2D(32, 3, activation="relu"), layers.MaxPooling2D(2)]
    stack += [
        layers.Flatten(),
        layers.Dense(3137, activation="relu"),
        layers.Dense(3137, activation="relu"),
        layers.Dense(n, activation="softmax"),
    ]
    return keras.Sequential(stack, name="homer_bart_tutorial_001")


def blood_cells_tutorial_002(shape: tuple[int, int, int], n: int) -> keras.Model:
    """Tutorial 002: two same-padded conv32 + pool, dropout 0.5, dense 128."""
    return keras.Sequential(
        [
            keras.Input(shape),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(2, strides=2),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(2, strides=2),
            layers.Dropout(0.5),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
            layers.Dense(n, activation="softmax"),
        ],
        name="blood_cells_tutorial_002",
    )


def faces_tutorial_003(shape: tuple[int, int, int], n: int) -> keras.Model:
    """Tutorial 003, faces: AlexNet-style 5 conv + 3 dense (635,170 parameters at 224x224)."""
    return keras.Sequential(
        [
            keras.Input(shape),
            layers.Conv2D(32, 11, strides=4, padding="same", activation="relu"),
            layers.MaxPooling2D(3, strides=2, padding="same"),
            layers.BatchNormalization(),
            layers.Conv2D(64, 5, padding="same", activation="relu"),
            layers.MaxPooling2D(3, strides=2, padding="same"),
            layers.BatchNormalization(),
            layers.Conv2D(128, 3, padding="same", activation="relu"),
            layers.Conv2D(64, 3, padding="same", activation="relu"),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.Flatten(),
            layers.Dense(64, activation="relu"),
            layers.Dropout(0.5),
            layers.Dense(64, activation="relu"),
            layers.Dropout(0.5),
            layers.Dense(n, activation="softmax"),
        ],
        name="faces_tutorial_003",
    )


def _conv_bn(x: keras.KerasTensor, filters: int, strides: int = 1) -> keras.KerasTensor:
    x = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    return layers.ReLU()(x)


def residual_cnn(
    widths: Sequence[int], *, stem_stride: int = 1, dropout: float = 0.2, name: str
) -> Builder:
    """Our compact network: conv-BN-ReLU stages with a residual pair each, max-pool between
    stages, global average pooling and a softmax head. Small, fast to serve, strong on CPUs."""

    def build(shape: tuple[int, int, int], n: int) -> keras.Model:
        inputs = keras.Input(shape)
        x = _conv_bn(inputs, widths[0], strides=stem_stride)
        for index, filters in enumerate(widths):
            if index:
                x = layers.MaxPooling2D(2)(x)
            x = _conv_bn(x, filters)
            shortcut = x
            x = _conv_bn(x, filters)
            x = _conv_bn(x, filters)
            x = layers.Add()([x, shortcut])
        x = layers.GlobalAveragePooling2D()(x)
        x = layers.Dropout(dropout)(x)
        outputs = layers.Dense(n, activation="softmax")(x)
        return keras.Model(inputs, outputs, name=name)

    return build


def small_cnn(
    widths: Sequence[int], *, dropout: float = 0.3, name: str, standardize: bool = False
) -> Builder:
    """A plain VGG-style net (two conv-BN-ReLU per stage, max-pool, GAP): the small tasks' model.
    `standardize`: each image first scaled to zero mean and unit variance over all its pixels and
    channels (colour ratios kept), so a brighter or dimmer exposure reaches the convolutions
    unchanged (up to clipping)."""

    def build(shape: tuple[int, int, int], n: int) -> keras.Model:
        inputs = keras.Input(shape)
        x = inputs
        if standardize:
            standardise = layers.LayerNormalization(
                axis=(1, 2, 3), epsilon=1e-6, center=False, scale=False
            )  # Keras' default epsilon, 1e-3, is a tenth of an /255 image's variance
            x = standardise(x)
        for index, filters in enumerate(widths):
            if index:
                x = layers.MaxPooling2D(2)(x)
            x = _conv_bn(x, filters)
            x = _conv_bn(x, filters)
        x = layers.GlobalAveragePooling2D()(x)
        x = layers.Dropout(dropout)(x)
        outputs = layers.Dense(n, activation="softmax")(x)
        return keras.Model(inputs, outputs, name=name)

    return build


def strided_cnn(widths: Sequence[int], *, dropout: float = 0.3, name: str) -> Builder:
    """Stride-2 conv-BN-ReLU layers only (5x5 first, then 3x3), flattened into the softmax: no
    full-resolution feature map and no pooling, so it serves faster than a same-padded first
    convolution (MNIST: 54k images/s at batch 256 against the tutorial net's 41k)."""

    def build(shape: tuple[int, int, int], n: int) -> keras.Model:
        inputs = keras.Input(shape)
        x = inputs
        for index, filters in enumerate(widths):
            x = layers.Conv2D(filters, 3 if index else 5, strides=2, padding="same",
                              use_bias=False)(x)  # fmt: skip
            x = layers.BatchNormalization()(x)
            x = layers.ReLU()(x)
        x = layers.Flatten()(x)
        x = layers.Dropout(dropout)(x)
        outputs = layers.Dense(n, activation="softmax")(x)
        return keras.Model(inputs, outputs, name=name)

    return build


def tiny_cnn(shape: tuple[int, int, int], n: int) -> keras.Model:
    """A few-thousand-parameter net for tests and smoke runs: trains in seconds."""
    return keras.Sequential(
        [
            keras.Input(shape),
            layers.Conv2D(8, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(2),
            layers.Conv2D(8, 3, padding="same", activation="relu"),
            layers.GlobalAveragePooling2D(),
            layers.Dense(n, activation="softmax"),
        ],
        name="tiny",
    )

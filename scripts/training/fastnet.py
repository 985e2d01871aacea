"""The fast-training CIFAR-10 network and its optimizer, after the published speed-run recipes.

Our Keras rendering of the ideas in Keller Jordan's airbench94 and David Page's DAWNBench ResNet:
a frozen first convolution that whitens 2x2 patches (PCA of training patches), identity (Dirac)
initialisation of every other convolution, batch norm with its scale frozen at 1 and its bias
learning `bias_lr_scale` times faster, Nesterov SGD on a triangular schedule.

    model = fastnet((64, 256, 256))(shape, 10); prepare(model, train_images)
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
from keras import layers

from training.architectures import Builder
from training.recipe import Augment, Nesterov, Recipe
from training.task import Architecture

WHITEN = "whiten"
PATCH = 2


def _block(x: keras.KerasTensor, filters: int, momentum: float, name: str) -> keras.KerasTensor:
    """conv -> max-pool -> BN -> GELU -> conv -> BN -> GELU (pooling before BN halves its cost)."""
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv1")(x)
    x = layers.MaxPooling2D(2, name=f"{name}_pool")(x)
    for index in (1, 2):
        if index == 2:
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(x)
        x = layers.BatchNormalization(
            momentum=momentum, epsilon=1e-5, scale=False, name=f"{name}_norm{index}"
        )(x)
        x = layers.Activation("gelu", name=f"{name}_act{index}")(x)
    return x


def fastnet(
    widths: Sequence[int], *, bn_momentum: float = 0.4, logit_scale: float = 1 / 9, name: str
) -> Builder:
    """Whitening stem, one block per width (each halves the resolution), global max pool, a
    bias-free linear head whose logits are scaled down before the softmax."""

    def build(shape: tuple[int, int, int], n: int) -> keras.Model:
        inputs = keras.Input(shape)
        width = 2 * PATCH * PATCH * shape[-1]  # every eigen-patch and its negative
        x = layers.Conv2D(width, PATCH, padding="valid", name=WHITEN, trainable=False)(inputs)
        x = layers.Activation("gelu", name="whiten_act")(x)
        for index, filters in enumerate(widths):
            x = _block(x, filters, bn_momentum, f"block{index + 1}")
        x = layers.GlobalMaxPooling2D(name="pool")(x)
        x = layers.Dense(n, use_bias=False, name="head")(x)
        x = layers.Rescaling(logit_scale, name="logit_scale")(x)
        outputs = layers.Activation("softmax", dtype="float32", name="softmax")(x)
        return keras.Model(inputs, outputs, name=name)

    return build


def whitening_filters(
    images: np.ndarray, *, samples: int = 10_000, eps: float = 5e-4
) -> tuple[np.ndarray, np.ndarray]:
    """Kernel [2, 2, C, 4C] and bias [4C] mapping 2x2 patches onto their principal components
    scaled to unit variance (and their negatives), centred on the mean patch."""
    x = images[:samples].astype(np.float64)
    _, h, w, c = x.shape
    patches = np.stack(
        [
            x[:, i : h - PATCH + 1 + i, j : w - PATCH + 1 + j]
            for i in range(PATCH)
            for j in range(PATCH)
        ],
        axis=3,
    ).reshape(-1, PATCH * PATCH * c)  # (kh, kw, c) order, as a Keras kernel flattens
    mean = patches.mean(axis=0)
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(patches - mean, rowvar=False))
    filters = eigenvectors / np.sqrt(eigenvalues + eps)  # columns: one filter per component
    filters = np.concatenate([filters, -filters], axis=1)
    kernel = filters.reshape(PATCH, PATCH, c, -1).astype(np.float32)
    return kernel, (-mean @ filters).astype(np.float32)


def prepare(model: keras.Model, images: np.ndarray) -> None:
    """Data-dependent initialisation: the whitening stem from `images`, and identity filters in
    the first min(C_in, C_out) outputs of every other 3x3 convolution (a block starts near a
    pass-through, so the deep net trains like a shallow one at first)."""
    whiten = model.get_layer(WHITEN)
    whiten.set_weights(list(whitening_filters(images)))
    for layer in model.layers:
        if isinstance(layer, layers.Conv2D) and layer.name != WHITEN:
            kernel = layer.get_weights()[0]
            kh, kw, c_in, c_out = kernel.shape
            k = min(c_in, c_out)
            kernel[:, :, :k, :k] = 0.0
            kernel[kh // 2, kw // 2, np.arange(k), np.arange(k)] = 1.0
            layer.set_weights([kernel])


SPEED_RUN_AUGMENT = Augment(flip=True, alternate_flip=True, translate=2)


def architecture(
    name: str = "fast",
    widths: Sequence[int] = (64, 256, 256),
    epochs: int = 12,
    augment: Augment = SPEED_RUN_AUGMENT,
) -> Architecture:
    """cifar10's "fast" (airbench94's widths) or a sibling (wider, or trained longer under
    stronger augmentation): this net with the speed-run recipe that trains it."""
    cutout = f", {augment.cutout}-pixel cutout" if augment.cutout else ""
    return Architecture(
        name,
        fastnet(widths, name=f"cifar10_{name.replace('-', '_')}"),
        f"speed-run recipe (airbench94/DAWNBench ideas), widths {'/'.join(map(str, widths))}: "
        "frozen 2x2 patch-whitening conv, Dirac init, BN bias at 64x LR, Nesterov SGD, "
        "triangular schedule, lookahead, label smoothing 0.2, "
        f"{augment.translate}-pixel reflect translate{cutout}, alternating flips; flip TTA",
        Recipe(
            epochs=epochs,
            batch_size=1024,
            learning_rate=1.5,  # airbench's 11.5 per 1024 summed, for a mean loss
            schedule="triangular",
            label_smoothing=0.2,
            weight_decay=0.0089,  # decoupled (x lr); airbench's 0.0153 through momentum
            patience=1000,
            augment=augment,
            tta_flip=True,
            sgd=Nesterov(),
            keep_best=False,
            precision="mixed_bfloat16",
        ),
        prepare=prepare,
    )


def is_norm_bias(variable: keras.Variable) -> bool:
    return variable.name == "beta"


class BiasScaledSGD(keras.optimizers.SGD):
    """SGD whose batch-norm biases learn `bias_lr_scale` times faster (their gradients are scaled;
    with momentum that is the same as a higher learning rate). Keras has no per-variable rates."""

    def __init__(self, *args, bias_lr_scale: float = 64.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.bias_lr_scale = bias_lr_scale

    def apply(self, grads, trainable_variables=None):
        variables = (
            trainable_variables if trainable_variables is not None else self._trainable_variables
        )
        grads = [
            g * self.bias_lr_scale if g is not None and is_norm_bias(v) else g
            for g, v in zip(grads, variables, strict=True)
        ]
        return super().apply(grads, trainable_variables)


@keras.saving.register_keras_serializable("clfserve")
class Triangular(keras.optimizers.schedules.LearningRateSchedule):
    """Linear from `start`*peak up to peak at `peak_at` of the run, then down to `end`*peak."""

    def __init__(
        self,
        peak: float,
        total_steps: int,
        *,
        start: float = 0.2,
        peak_at: float = 0.23,
        end: float = 0.07,
    ) -> None:
        self.peak, self.total_steps = peak, max(1, total_steps)
        self.start, self.peak_at, self.end = start, peak_at, end

    def __call__(self, step):
        t = keras.ops.cast(step, "float32") / self.total_steps
        up = self.start + (1 - self.start) * t / self.peak_at
        down = 1 - (1 - self.end) * (t - self.peak_at) / (1 - self.peak_at)
        return self.peak * keras.ops.where(t < self.peak_at, up, keras.ops.maximum(down, self.end))

    def get_config(self) -> dict[str, float]:
        return {
            "peak": self.peak,
            "total_steps": self.total_steps,
            "start": self.start,
            "peak_at": self.peak_at,
            "end": self.end,
        }

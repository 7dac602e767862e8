"""The names a config may use, with one line each: what `python -m bnexp list` prints and what the config
check accepts. Plain data, so the parent side reads them without starting TensorFlow."""

DATASETS = {
    "fashion_mnist": "Fashion-MNIST, 28x28x1, 10 classes (offline: Debian's dataset-fashion-mnist)",
    "mnist": "MNIST, 28x28x1, 10 classes (TFDS download or prepared data dir)",
    "cifar10": "CIFAR-10, 32x32x3, 10 classes (TFDS download or prepared data dir)",
}
SCALINGS = ("unit", "standard", "raw")
SHIFTS = ("none", "invert", "contrast", "brightness")
# Corrupted test sets with severities 1..5 (remedy R2, scenario domain_shift; bnexp.toolkit.data.corrupt).
CORRUPTIONS = {
    "noise": "additive Gaussian noise, std 0.04..0.10 of the pixel range (CIFAR-10-C's gaussian_noise levels)",
    "blur": "Gaussian blur, sigma 0.4..1.0 pixels (CIFAR-10-C's gaussian_blur levels)",
    "contrast": "contrast around each image's mean scaled by 0.75..0.15 (CIFAR-10-C's contrast levels)",
    "inversion": "blend a*(255-x) + (1-a)*x with a = 0.6..1.0 (severity 5: fully inverted)",
}
SEVERITIES = (1, 2, 3, 4, 5)

MODELS = {
    "small_cnn": "2 conv blocks (16, 32 filters) + dense 64, for 28x28 images",
    "mlp": "dense 128 -> 64, for flattened images",
    "resnet_tiny": "conv stem + 3 residual stages (16, 32, 64 filters), for 32x32 images",
}
NORMS = {
    "bn": "BatchNormalization",
    "none": "no normalization layer",
    "gn": "GroupNormalization (8 groups)",
    "ln": "LayerNormalization (all non-batch axes)",
    "brn": "Batch Renormalization (BatchNormalization(renorm=True, renorm_momentum=bn.momentum)), r, d unclipped",
    "brn_clip": "Batch Renormalization, r clipped to [1/3, 3], d to [-5, 5] (the BRN paper's final limits, fixed)",
}
# Which layers of small_cnn / mlp carry the norm layer (model.norm_layers); the others keep their bias.
NORM_LAYERS = {
    "conv_dense": "every conv and hidden dense layer (small_cnn: conv1, conv2, fc1)",
    "conv": "conv layers only; the hidden dense layer fc1 has no norm (a dense BN at batch B normalizes over B values)",
}
FLAG_STYLES = ("functional", "subclass")

OPTIMIZERS = ("adam", "sgd")
DEVICES = ("auto", "cpu", "gpu")

# The four framework semantics (bnexp.toolkit.framework activates one per process).
SEMANTICS = {
    "keras3": "Keras 3 (TensorFlow 2.x default)",
    "tf_keras": "Keras 2 via tf-keras, TF2 behaviour",
    "keras2_v1": "tf-keras with the V1 BatchNormalization class (Keras <= 2.2.4 / TF1 frozen-BN behaviour)",
    "tf1": "tf.compat.v1 graph mode with sessions (tf-keras provides tf.compat.v1.layers)",
}
# Semantics that run on tf-keras: TF_USE_LEGACY_KERAS=1 must be set before TensorFlow is imported.
LEGACY = {"tf_keras", "keras2_v1", "tf1"}

# Sizes of each dataset's splits and its class count: a config asking for more fails before TensorFlow starts.
DATASET_SIZES = {
    "fashion_mnist": {"train": 60000, "test": 10000, "classes": 10},
    "mnist": {"train": 60000, "test": 10000, "classes": 10},
    "cifar10": {"train": 50000, "test": 10000, "classes": 10},
}

# Keras 3 backends (semantics=keras3 only; bnexp.backends checks them, the child activates one).
BACKENDS = {
    "tensorflow": "TensorFlow (the default; tf.data input pipelines)",
    "jax": "JAX, CPU build from the package registry (NumPy input batches)",
    "torch": "PyTorch, CPU build (NumPy input batches)",
}

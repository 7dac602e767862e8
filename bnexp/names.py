"""The names a config may use, with one line each: what `python -m bnexp list` prints and what the config
check accepts. Plain data, so the parent side reads them without starting TensorFlow."""

DATASETS = {
    "fashion_mnist": "Fashion-MNIST, 28x28x1, 10 classes (offline: Debian's dataset-fashion-mnist)",
    "mnist": "MNIST, 28x28x1, 10 classes (TFDS download or prepared data dir)",
    "cifar10": "CIFAR-10, 32x32x3, 10 classes (TFDS download or prepared data dir)",
}
SCALINGS = ("unit", "standard", "raw")
SHIFTS = ("none", "invert", "contrast", "brightness")

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
    "brn": "Batch Renormalization (BatchNormalization(renorm=True, renorm_momentum=bn.momentum))",
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

# Keras 3 backends (semantics=keras3 only; bnexp.backends checks them, the child activates one).
BACKENDS = {
    "tensorflow": "TensorFlow (the default; tf.data input pipelines)",
    "jax": "JAX, CPU build from the package registry (NumPy input batches)",
    "torch": "PyTorch, CPU build (NumPy input batches)",
}

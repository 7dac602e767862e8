"""The four framework semantics, and the only module that chooses a Keras flavour.

keras3     Keras 3 as shipped with TensorFlow 2.x.
tf_keras   Keras 2 (the tf-keras package) with TF2 behaviour.
keras2_v1  tf-keras with its V1 BatchNormalization class: a frozen BN layer (trainable=False) still
           follows the `training` argument, as Keras <= 2.2.4 / TF1 did.
tf1        tf.compat.v1 graph mode (sessions, tf.compat.v1.layers; needs tf-keras).

One interpreter can hold only one of these: TF_USE_LEGACY_KERAS must be set before TensorFlow is
imported, and graph mode must be switched on before any op runs. So the parent prepares a child process
(bnexp.runner.child_env, no TensorFlow import) and `activate` runs first thing inside it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from bnexp.names import LEGACY, SEMANTICS


@dataclass
class Flavour:
    """What an experiment needs from the active framework."""

    name: str
    tf: ModuleType
    keras: Any  # the keras module: `keras` (3) or `tf_keras` (2)
    BatchNormalization: type

    def set_seed(self, seed: int) -> None:
        """Seed Python, NumPy and TensorFlow, and make TensorFlow ops deterministic."""
        self.keras.utils.set_random_seed(int(seed))
        self.tf.config.experimental.enable_op_determinism()


def activate(semantics: str) -> Flavour:
    """Import TensorFlow and the Keras flavour for `semantics`. Call once, first, in a fresh process."""
    if semantics not in SEMANTICS:
        raise ValueError(f"unknown semantics {semantics!r}; valid: {', '.join(SEMANTICS)}")
    legacy = os.environ.get("TF_USE_LEGACY_KERAS") == "1"
    if legacy != (semantics in LEGACY):
        raise RuntimeError(
            f"semantics {semantics!r} needs TF_USE_LEGACY_KERAS={'1' if semantics in LEGACY else 'unset'} "
            "before TensorFlow is imported; start the run through bnexp (it sets up the child process)"
        )
    import tensorflow as tf

    if semantics == "tf1":
        tf.compat.v1.disable_eager_execution()
    if semantics == "keras3":
        import keras

        return Flavour(semantics, tf, keras, keras.layers.BatchNormalization)
    import tf_keras

    if semantics == "keras2_v1":
        from tf_keras.src.layers.normalization.batch_normalization_v1 import BatchNormalization as BNv1

        return Flavour(semantics, tf, tf_keras, BNv1)
    return Flavour(semantics, tf, tf_keras, tf_keras.layers.BatchNormalization)

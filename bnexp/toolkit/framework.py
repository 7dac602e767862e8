"""The four framework semantics, and the only module that chooses a Keras flavour.

keras3     Keras 3 as shipped with TensorFlow 2.x, or on JAX or PyTorch (`backend`; KERAS_BACKEND is set
           by the parent before Keras is imported, and a pinned Keras release put first on the path).
tf_keras   Keras 2 (the tf-keras package) with TF2 behaviour.
keras2_v1  tf-keras with its V1 BatchNormalization class: a frozen BN layer (trainable=False) still
           follows the `training` argument, as Keras <= 2.2.4 / TF1 did.
tf1        tf.compat.v1 graph mode (sessions, tf.compat.v1.layers; needs tf-keras).

One interpreter can hold only one of these: TF_USE_LEGACY_KERAS must be set before TensorFlow is
imported, and graph mode must be switched on before any op runs. So the parent prepares a child process
(bnexp.launcher.child_env, no TensorFlow import) and `activate` runs first thing inside it.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from bnexp.names import BACKENDS, LEGACY, SEMANTICS

BACKEND = "tensorflow"  # the Keras backend `activate` started in this process (data and probes ask it)


@dataclass
class Flavour:
    """What an experiment needs from the active framework."""

    name: str
    tf: ModuleType | None  # None where Keras 3 runs on JAX or PyTorch: TensorFlow is not imported there
    keras: Any  # the keras module: `keras` (3) or `tf_keras` (2)
    BatchNormalization: type
    backend: str = "tensorflow"

    def set_seed(self, seed: int) -> None:
        """Seed Python, NumPy and the backend, and make its ops deterministic."""
        self.keras.utils.set_random_seed(int(seed))
        if self.tf is not None:
            self.tf.config.experimental.enable_op_determinism()
        if self.backend == "torch":
            import torch

            torch.use_deterministic_algorithms(True, warn_only=True)

    def gpu_count(self) -> int:
        """GPUs the backend sees (CUDA_VISIBLE_DEVICES=-1 hides them for device=cpu)."""
        if self.backend == "jax":
            import jax

            return sum(d.platform == "gpu" for d in jax.devices())
        if self.backend == "torch":
            import torch

            return torch.cuda.device_count()
        return len(self.tf.config.list_physical_devices("GPU"))

    def versions(self) -> dict:
        """What actually ran: keras (its __version__), keras_backend, and each imported framework's version."""
        tf = sys.modules.get("tensorflow")  # imported by Keras itself in some releases, even on JAX
        out = {"tensorflow": getattr(tf, "__version__", None),
               "keras": self.keras.__version__, "keras_backend": self.backend}
        if self.backend != "tensorflow":
            out[self.backend] = importlib.import_module(self.backend).__version__
        return out


def activate(semantics: str, backend: str = "tensorflow") -> Flavour:
    """Import the Keras flavour for `semantics` on `backend` (TensorFlow unless Keras 3 runs on JAX or
    PyTorch). Call once, first, in a fresh process."""
    global BACKEND
    if semantics not in SEMANTICS:
        raise ValueError(f"unknown semantics {semantics!r}; valid: {', '.join(SEMANTICS)}")
    if backend not in BACKENDS or (backend != "tensorflow" and semantics != "keras3"):
        raise ValueError(f"backend {backend!r} is not valid for semantics {semantics!r}; Keras 3 takes "
                         f"{', '.join(BACKENDS)}, the others run on TensorFlow only")
    if semantics == "keras3" and os.environ.get("KERAS_BACKEND", "tensorflow") != backend:
        raise RuntimeError(f"backend {backend!r} needs KERAS_BACKEND={backend} before Keras is imported; start "
                           "the run through bnexp (it sets up the child process)")
    legacy = os.environ.get("TF_USE_LEGACY_KERAS") == "1"
    if legacy != (semantics in LEGACY):
        raise RuntimeError(
            f"semantics {semantics!r} needs TF_USE_LEGACY_KERAS={'1' if semantics in LEGACY else 'unset'} "
            "before TensorFlow is imported; start the run through bnexp (it sets up the child process)"
        )
    if semantics == "keras3" and backend != "tensorflow":
        import keras

        if keras.backend.backend() != backend:
            raise RuntimeError(f"Keras {keras.__version__} started on backend {keras.backend.backend()!r}, "
                               f"not {backend!r}")
        BACKEND = backend
        return Flavour(semantics, None, keras, keras.layers.BatchNormalization, backend)
    import tensorflow as tf

    if semantics == "tf1":
        tf.compat.v1.disable_eager_execution()
    if semantics == "keras3":
        import keras

        if keras.backend.backend() != "tensorflow":
            raise RuntimeError(f"Keras {keras.__version__} started on backend {keras.backend.backend()!r}, "
                               "not 'tensorflow' (KERAS_BACKEND or ~/.keras/keras.json)")
        return Flavour(semantics, tf, keras, keras.layers.BatchNormalization)
    import tf_keras

    if semantics == "keras2_v1":
        from tf_keras.src.layers.normalization.batch_normalization_v1 import BatchNormalization as BNv1

        return Flavour(semantics, tf, tf_keras, BNv1)
    return Flavour(semantics, tf, tf_keras, tf_keras.layers.BatchNormalization)

"""Hostile model files for tests/test_doctor_untrusted.py: each one creates its marker file (`<name>.marker`
beside it) if the code it carries runs; and models of built-in layers only, which must pass the checks.

`python tests/doctor_hostile.py FOLDER` builds the files of the semantics its environment selects
(TF_USE_LEGACY_KERAS=1: tf-keras `.h5` and SavedModel files; unset: Keras 3 `.keras` files), as
tests/doctor_zoo.py does. Building calls each lambda once (Keras traces it), so the markers are removed at
the end: any marker found later was created by loading or running the file.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

SIZE, CLASSES = 12, 4


def marker_of(folder: Path, name: str) -> Path:
    return folder / f"{name}.marker"


def marker_lambda(marker: Path):
    """A lambda whose own bytecode (the marker's path is a constant in it) creates `marker` when called."""
    return eval(f"lambda x: x if open({str(marker)!r}, 'a').close() is None else x")


def head(keras, x):
    """Flatten and a 4-class Dense: the data's labels fit every model here."""
    return keras.layers.Dense(CLASSES, name="logits")(keras.layers.Flatten()(x))


def build_tf_keras(folder: Path, fw) -> None:
    """lambda.h5 (the Lambda nested in a Sequential), lambda_savedmodel (tf-keras SavedModel), custom.h5 (an
    unregistered custom layer), graph_writer (a tf.Module whose graph writes the marker), builtins.h5."""
    keras, tf = fw.keras, fw.tf
    inp = keras.Input((SIZE, SIZE, 1))
    inner = keras.Sequential([keras.layers.Lambda(marker_lambda(marker_of(folder, "lambda_h5")), name="marker")],
                             name="inner")
    keras.Model(inp, head(keras, inner(inp)), name="lambda_h5").save(folder / "lambda.h5")

    inp = keras.Input((SIZE, SIZE, 1))
    x = keras.layers.Lambda(marker_lambda(marker_of(folder, "lambda_savedmodel")), name="marker")(inp)
    keras.Model(inp, head(keras, x), name="lambda_savedmodel").save(folder / "lambda_savedmodel", save_format="tf")

    custom_marker = str(marker_of(folder, "custom_h5"))

    class MarkerLayer(keras.layers.Layer):
        def call(self, x):
            open(custom_marker, "a").close()
            return x

    inp = keras.Input((SIZE, SIZE, 1))
    keras.Model(inp, head(keras, MarkerLayer(name="marker")(inp)), name="custom_h5").save(folder / "custom.h5")

    graph_marker = str(marker_of(folder, "graph_writer"))

    class Writer(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 1], tf.float32)])
        def __call__(self, x):
            tf.io.write_file(graph_marker, "written by the model file's graph")
            return x

    tf.saved_model.save(Writer(), str(folder / "graph_writer"))
    builtin_layers(fw).save(folder / "builtins.h5")


def build_keras3(folder: Path, fw) -> None:
    """lambda.keras (the Lambda wrapped in TimeDistributed) and builtins.keras."""
    keras = fw.keras
    inp = keras.Input((SIZE, SIZE, 1))
    x = keras.layers.TimeDistributed(keras.layers.Lambda(marker_lambda(marker_of(folder, "lambda_keras")),
                                                         name="marker"), name="per_row")(inp)
    keras.Model(inp, head(keras, x), name="lambda_keras").save(folder / "lambda.keras")
    builtin_layers(fw).save(folder / "builtins.keras")


def builtin_layers(fw):
    """Built-in layers, initializers, regularizers, constraints, wrappers, a nested model and tensor ops (tf-keras
    records those as TFOpLambda layers, Keras 3 as operations): nothing here may be refused."""
    keras, L = fw.keras, fw.keras.layers
    inp = keras.Input((SIZE, SIZE, 1))
    x = L.Rescaling(1 / 255)(inp)
    x = L.Conv2D(4, 3, padding="same", kernel_initializer="he_normal", kernel_regularizer=keras.regularizers.L2(1e-4),
                 kernel_constraint=keras.constraints.MaxNorm(3))(x)
    x = L.Activation("relu")(fw.BatchNormalization()(x))
    block = keras.Sequential([L.DepthwiseConv2D(3, padding="same"), L.LayerNormalization(), L.Dropout(0.1)],
                             name="block")
    x = L.Add()([x, block(x)])
    rows = L.Reshape((SIZE, SIZE * 4))(x)
    seq = L.Bidirectional(L.LSTM(4, return_sequences=True))(rows)
    seq = L.TimeDistributed(L.Dense(3, activation="tanh"))(seq)
    if fw.name == "tf_keras":
        seq = fw.tf.concat([fw.tf.nn.relu(seq), fw.tf.reshape(seq * 2.0, (-1, SIZE, 3))[:, :, :2]], axis=-1)
    else:
        seq = keras.ops.concatenate([keras.ops.relu(seq), keras.ops.multiply(seq, 2.0)], axis=-1)
    x = L.Concatenate()([L.GlobalAveragePooling1D()(seq), L.GlobalMaxPooling2D()(x)])
    return keras.Model(inp, L.Dense(CLASSES, activation="softmax")(x))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import doctor_zoo

    from bnexp.toolkit.framework import activate

    legacy = os.environ.get("TF_USE_LEGACY_KERAS") == "1"
    target = Path(sys.argv[1])
    target.mkdir(parents=True, exist_ok=True)
    flavour = activate("tf_keras" if legacy else "keras3")
    (build_tf_keras if legacy else build_keras3)(target, flavour)
    if not legacy:
        x, y = doctor_zoo.make_data()
        np.savez(target / "data.npz", x=x[:256], y=y[:256])
    for marker in target.glob("*.marker"):
        marker.unlink(missing_ok=True)
    print("\n".join(sorted(p.name for p in target.iterdir())))

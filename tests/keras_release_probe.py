"""How BatchNormalization's construction-time `training=` fares in one Keras 3 release on one backend: the tiny
probe that chose the reference grid's Keras releases (configs/sweep/reference.yaml). Random data, seconds to run:

    python -m bnexp run scenario=training_flag keras_version=3.9.2 ...   # installs 3.9.2 into the cache once
    PYTHONPATH=~/.cache/bnexp/keras/3.9.2 KERAS_BACKEND=jax python tests/keras_release_probe.py

Prints one JSON line:
  c03_flag_false_stats_changed   1: fit changed the moving statistics of BatchNormalization()(x, training=False)
  c04_alone_vs_batch             max |logit| difference, alone vs in a batch, with training=True (0: flag ignored)
  c15_unfrozen_training_false_stats_changed   1: base(x, training=False), unfrozen and recompiled, still updated
"""

import json

import keras
import numpy as np

keras.utils.set_random_seed(0)
x = np.random.rand(64, 8, 8, 1).astype("float32")
y = np.random.randint(0, 3, 64)


def net(flag):
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3)(inputs)
    bn = keras.layers.BatchNormalization()
    h = bn(h, training=flag) if flag is not None else bn(h)
    return keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(h)))


def bn_stats(model):
    return np.concatenate([np.asarray(w) for layer in model._flatten_layers()
                           if isinstance(layer, keras.layers.BatchNormalization)
                           for w in (layer.moving_mean, layer.moving_variance)])


def fit(model):
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)


out = {"keras": keras.__version__, "backend": keras.backend.backend()}
model = net(False)
before = bn_stats(model)
fit(model)
out["c03_flag_false_stats_changed"] = float(not np.array_equal(before, bn_stats(model)))
model = net(True)
fit(model)
alone, together = model.predict(x[:16], batch_size=1, verbose=0), model.predict(x[:16], batch_size=16, verbose=0)
out["c04_alone_vs_batch"] = float(np.max(np.abs(alone - together)))
base = net(None)
base.trainable = False
inputs = keras.Input((8, 8, 1))
outer = keras.Model(inputs, keras.layers.Dense(3)(base(inputs, training=False)))
fit(outer)
base.trainable = True
before = bn_stats(base)
fit(outer)
out["c15_unfrozen_training_false_stats_changed"] = float(not np.array_equal(before, bn_stats(base)))
print(json.dumps(out))

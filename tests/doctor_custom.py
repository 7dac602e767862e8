"""A registered Keras 3 model class for the doctor tests: BN's training flag hard-coded to True in call()
(claim C04). The doctor loads it only through `custom_objects=doctor_custom`."""

import keras


@keras.saving.register_keras_serializable(package="doctor_custom")
class AlwaysTrainingNet(keras.Model):
    def __init__(self, classes=4, **kwargs):
        super().__init__(**kwargs)
        self.classes = classes
        self.conv = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)
        self.bn1 = keras.layers.BatchNormalization(momentum=0.9)
        self.pool = keras.layers.MaxPooling2D()
        self.flat = keras.layers.Flatten()
        self.fc = keras.layers.Dense(16, use_bias=False)
        self.bn2 = keras.layers.BatchNormalization(momentum=0.9)
        self.head = keras.layers.Dense(classes)

    def call(self, x, training=None):
        x = self.pool(keras.ops.relu(self.bn1(self.conv(x), training=True)))  # the pitfall: fixed True
        x = keras.ops.relu(self.bn2(self.fc(self.flat(x)), training=True))
        return self.head(x)

    def get_config(self):
        return {**super().get_config(), "classes": self.classes}


@keras.saving.register_keras_serializable(package="doctor_custom")
class ConvBN(keras.layers.Layer):
    """A conv block holding its BN as an attribute (center off), the way many model zoos write it: BN that
    `model.layers` does not list."""

    def __init__(self, filters=8, momentum=0.99, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.momentum = filters, momentum
        self.conv = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{self.name}_conv")
        self.bn = keras.layers.BatchNormalization(momentum=momentum, center=False, name=f"{self.name}_bn")

    def call(self, x, training=None):
        return keras.ops.relu(self.bn(self.conv(x), training=training))

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "momentum": self.momentum}


@keras.saving.register_keras_serializable(package="doctor_custom")
class MyBatchNorm(keras.layers.BatchNormalization):
    """A subclass of BatchNormalization: BN whose class name is not BatchNormalization."""

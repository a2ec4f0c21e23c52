"""Real Keras 3 output (KERAS_BACKEND=torch): a dense model, 3 epochs with a validation split."""

import keras
import numpy as np

rng = np.random.default_rng(0)
x = rng.normal(size=(256, 4)).astype("float32")
y = x.sum(axis=1, keepdims=True)
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)])
model.compile(optimizer="adam", loss="mse", metrics=["mae"])
model.fit(x, y, epochs=3, batch_size=32, validation_split=0.25)

"""A user's own Keras 3 script (KERAS_BACKEND=torch from the environment): a dense model, 3 epochs
of 6 batches with a validation split, a ModelCheckpoint file per epoch. The batch-end sleep stands
for a model slow enough that the progress line redraws within an epoch (every 50 ms, as Keras does)."""

import time

import keras
import numpy as np

rng = np.random.default_rng(0)
x = rng.normal(size=(256, 4)).astype("float32")
y = x.sum(axis=1, keepdims=True)
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)])
model.compile(optimizer="adam", loss="mse", metrics=["mae"])
slow_step = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: time.sleep(0.06))
save = keras.callbacks.ModelCheckpoint("ckpt/model-{epoch:02d}.keras")
model.fit(x, y, epochs=3, batch_size=32, validation_split=0.25, callbacks=[slow_step, save])

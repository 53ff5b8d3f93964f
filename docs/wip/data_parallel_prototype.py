import os, sys, time
os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
import keras, numpy as np
multi = "KERAS_DISTRIBUTION_NUM_PROCESSES" in os.environ
if multi:
    keras.distribution.initialize()
P, pid = jax.process_count(), jax.process_index()
devices = keras.distribution.list_devices()
print(pid, "devices", devices, "local", jax.local_devices(), flush=True)
keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False))
import tensorflow as tf
from softvq_keras import build_autoencoder, make_bottleneck, data
from softvq_keras.callbacks import CodebookKMeansInit
keras.utils.set_random_seed(0)
splits = data.load("digits")
x = splits.x_train
B, R = 64, len(devices)
imgs = tf.constant(x)
def trim(idx):
    n = (tf.shape(idx)[0] // R) * R
    per = n // P
    return idx[pid * per:(pid + 1) * per]
ds = (tf.data.Dataset.range(len(x)).shuffle(len(x), seed=0, reshuffle_each_iteration=True)
      .batch(B).map(trim).map(lambda i: tf.gather(imgs, i)).prefetch(2))
bn = make_bottleneck("softvq", "digits", seed=0)
ae, enc = build_autoencoder(bn, splits.x_train.shape[1:], 10, "mlp", pixel_variance=splits.pixel_variance)
ae.compile(optimizer=keras.optimizers.Adam(1e-3))
cbs = [CodebookKMeansInit(x[:500], at_epoch=1)] if "KM" in os.environ else []
t = time.time()
h = ae.fit(ds, epochs=2, verbose=2, callbacks=cbs)
print(pid, "fit s", time.time() - t, flush=True)
w = ae.get_weights()
print(pid, "checksum", float(sum(np.abs(a).sum() for a in w)), flush=True)

def local_predict(model, x):
    dist = keras.distribution.distribution()
    keras.distribution.set_distribution(None)
    try:
        clone = keras.models.clone_model(model)
        clone.set_weights(model.get_weights())
        return clone.predict(x, verbose=0)
    finally:
        keras.distribution.set_distribution(dist)
from jax.experimental import multihost_utils
z = local_predict(ae, x[:100])["latent"] if "PRED" in os.environ else None
z = multihost_utils.broadcast_one_to_all(z)
print(pid, "z", float(np.abs(z).sum()))
bn.codebook.assign(np.ones((32, 10), "float32")*(pid+1))
print(pid, "after assign", float(np.asarray(bn.codebook).sum()))

print(pid, "pred", None if z is None else z.shape)
np.save(f"/tmp/dp_w{pid}_{P}.npy", np.concatenate([a.ravel() for a in w]))

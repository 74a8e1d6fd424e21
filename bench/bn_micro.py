"""Fused batch normalisation lever (issue 13): one BN layer fwd+bwd, Keras 3 BatchNormalization vs
ssd_keras.backbones.FusedBatchNorm, interleaved. `TF_ENABLE_ONEDNN_OPTS=0|1 python bench/bn_micro.py`."""
import os, sys, time; os.environ["TF_CPP_MIN_LOG_LEVEL"]="2"
sys.path.insert(0, "bench")
import numpy as np, keras, tensorflow as tf
from loss import _time_interleaved
from ssd_keras.backbones import FusedBatchNorm
from tensorflow.python.util import _pywrap_util_port
x = tf.constant(np.random.default_rng(0).normal(size=(8, 56, 56, 64)).astype("float32"))
fns = {}
for name, cls in (("keras BatchNormalization", keras.layers.BatchNormalization), ("FusedBatchNorm", FusedBatchNorm)):
    layer = cls(momentum=0.9, epsilon=1e-5); layer.build(x.shape)
    def step(x, layer=layer):
        with tf.GradientTape() as t:
            t.watch(x); y = layer(x, training=True); s = tf.reduce_sum(y * y)
        return t.gradient(s, [x, layer.gamma, layer.beta])[0]
    f = tf.function(step)
    fns[name] = lambda f=f: f(x).numpy()
load = os.getloadavg()[0]
t = _time_interleaved(fns, 3, 30)
print(f"oneDNN {bool(_pywrap_util_port.IsMklEnabled())} (TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS')}); load {load:.1f} -> {os.getloadavg()[0]:.1f}")
for k, v in t.items(): print(f"| {k} | {v['ms_median']:.2f} | {v['ms_best']:.2f} |")

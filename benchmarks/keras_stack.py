"""Keras 3 (TensorFlow backend, oneDNN, no XLA) reference models (benchmark worker side).

* EfficientNet-B0: `keras.applications.EfficientNetB0(weights=None, classes=K)` with logits
  out (`classifier_activation=None`). It carries its own Rescaling + Normalization input
  layers (a few elementwise ops). Keras has no EfficientNet-Lite, so Lite0 is reported as
  unavailable for this stack.
* The custom CNN: the same layers as `carjax.models.cnn.CustomCNN`, built from the same
  config section.

Training is `model.train_on_batch` with the same optimizer class as carjax (AdamW or SGD
with Nesterov momentum) and softmax cross-entropy with the config's label smoothing;
`jit_compile=False` (XLA makes Keras ~3× slower on this CPU: ../shared/notes). Inference is
`predict_on_batch`. Inputs are float32 batches already normalised.
"""

from __future__ import annotations

import time

import numpy as np

from benchmarks import model_configs as configs
from benchmarks.timing import Unavailable, sample, timed_repeats


def build_custom_cnn(keras, model_config, image_size: int, num_classes: int):
  layers = keras.layers
  inputs = keras.Input((image_size, image_size, 3))
  x = inputs
  for stage, width in enumerate(model_config.stage_widths):
    for i in range(model_config.convs_per_stage):
      stride = model_config.stem_stride if stage == 0 and i == 0 else 1
      x = layers.Conv2D(width, model_config.kernel_size, strides=stride, padding="same",
                        use_bias=not model_config.use_batchnorm)(x)
      if model_config.use_batchnorm:
        # Keras momentum is flax's: running = m * running + (1 - m) * batch.
        x = layers.BatchNormalization(momentum=0.9, epsilon=1e-5)(x)
      x = layers.ReLU()(x)
    if model_config.pooling == "max":
      x = layers.MaxPooling2D(2)(x)
    elif model_config.pooling == "avg":
      x = layers.AveragePooling2D(2)(x)
  x = (layers.GlobalAveragePooling2D()(x) if model_config.global_pool == "avg"
       else layers.Flatten()(x))
  for width in model_config.dense_widths:
    x = layers.Dropout(model_config.dropout_rate)(x)
    x = layers.Dense(width, activation="relu")(x)
  x = layers.Dropout(model_config.dropout_rate)(x)
  outputs = layers.Dense(num_classes)(x)
  return keras.Model(inputs, outputs, name="custom_cnn")


def measure(task: dict) -> dict:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  threads = task["threads"]
  tf.config.threading.set_intra_op_parallelism_threads(threads)
  tf.config.threading.set_inter_op_parallelism_threads(task.get("tf_inter_op_threads", 1))
  import keras  # pylint: disable=g-import-not-at-top

  size, train_batch, infer_batch = task["image_size"], task["train_batch"], task["infer_batch"]
  num_classes = task["num_classes"]
  config = configs.bench_config(task["model"], image_size=size, batch_size=train_batch,
                                infer_batch=infer_batch, optimizer=task["optimizer"])
  variant = configs.efficientnet_variant(config)
  keras.utils.set_random_seed(0)
  start = time.perf_counter()
  if variant == "b0":
    model = keras.applications.EfficientNetB0(
        weights=None, classes=num_classes, input_shape=(size, size, 3),
        classifier_activation=None)
    implementation = "keras.applications.EfficientNetB0"
  elif variant is not None:
    raise Unavailable(f"Keras has no EfficientNet-{variant} application")
  else:
    model = build_custom_cnn(keras, config.model, size, num_classes)
    implementation = "Keras functional CustomCNN (benchmark)"
  train_cfg = config.train
  if train_cfg.optimizer == "adamw":
    optimizer = keras.optimizers.AdamW(learning_rate=train_cfg.learning_rate,
                                       weight_decay=train_cfg.weight_decay)
  else:
    optimizer = keras.optimizers.SGD(learning_rate=train_cfg.learning_rate,
                                     momentum=train_cfg.momentum, nesterov=True,
                                     weight_decay=train_cfg.weight_decay)
  model.compile(optimizer=optimizer,
                loss=keras.losses.CategoricalCrossentropy(
                    from_logits=True, label_smoothing=train_cfg.label_smoothing),
                jit_compile=False)
  result = {"implementation": implementation, "build_s": time.perf_counter() - start,
            # Trainable only, as carjax's params and torch's parameters() (no BN statistics).
            "parameters": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
            "threads": {"tf_intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                        "tf_inter_op": tf.config.threading.get_inter_op_parallelism_threads()},
            "onednn": "TF_ENABLE_ONEDNN_OPTS default (on for x86)", "jit_compile": False}

  rng = np.random.default_rng(0)
  def inputs(batch):
    return tf.constant(rng.standard_normal((batch, size, size, 3), np.float32))

  measured = task.get("measure", ("train", "infer"))
  warmup, repeats, steps = task["warmup"], task["repeats"], task["steps"]
  if "train" in measured:
    x = inputs(train_batch)
    y = tf.constant(np.eye(num_classes, dtype=np.float32)[
        rng.integers(0, num_classes, train_batch)])
    start = time.perf_counter()
    model.train_on_batch(x, y)
    result["train_first_call"] = {"total_s": time.perf_counter() - start}
    result["train"] = sample(
        timed_repeats(lambda: model.train_on_batch(x, y), lambda _: None, warmup=warmup,
                      repeats=repeats, steps=steps), train_batch, steps)
  if "infer" in measured:
    x = inputs(infer_batch)
    start = time.perf_counter()
    model.predict_on_batch(x)
    result["infer_first_call"] = {"total_s": time.perf_counter() - start}
    result["infer"] = sample(
        timed_repeats(lambda: model.predict_on_batch(x), lambda _: None, warmup=warmup,
                      repeats=repeats, steps=steps), infer_batch, steps)
  return result

"""Exporting a trained model for serving outside Python-JAX: `saved_model.export_model` writes a
TensorFlow SavedModel (and optionally a TFLite model) whose signatures hold carjax's evaluation
preprocessing (`tf_preprocess`: decoding and Pillow-exact resizing in TensorFlow).

Both modules import TensorFlow (the `export` extra) through `carjax.tensorflow_setup`.
"""

"""Running an exported ``model.tflite`` with LiteRT (`ai-edge-litert`), TensorFlow Lite's
maintained runtime: a serving client needs this package only, not TensorFlow
(`tf.lite.Interpreter` is deprecated in its favour).
"""

from __future__ import annotations

from typing import Callable, Sequence

from carjax import extras


def signature_runner(path: str, input_shape: Sequence[int],
                     signature: str = "serving_default") -> Callable:
  """The `signature` of a carjax TFLite export, sized for uint8 images of `input_shape`.

  carjax exports take [batch, H, W, 3] of any batch and size, so the input tensor is resized
  before the tensors are allocated. Call the result as ``runner(images=uint8_array)``; it
  returns {'probabilities', 'logits', 'class_index', ...} as numpy arrays.
  """
  interpreter_lib = extras.import_optional("ai_edge_litert.interpreter", "export",
                                           "Running a TFLite model")
  interpreter = interpreter_lib.Interpreter(model_path=path)
  detail = interpreter.get_input_details()[0]
  interpreter.resize_tensor_input(detail["index"], list(input_shape))
  interpreter.allocate_tensors()
  return interpreter.get_signature_runner(signature)

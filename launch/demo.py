r"""A local web page to try a trained model on your own photos (needs the demo extra).

  python -m launch.demo --workdir=runs/lite0_finetune            # http://127.0.0.1:8000
  python -m launch.demo --workdir=runs/lite0_finetune --port=8080 --host=0.0.0.0

Drop one or several photos on the page: it shows the top-3 makes with their probabilities and
a Grad-CAM overlay. See carjax/demo.py.
"""

from absl import app
from absl import flags
from absl import logging

from carjax import demo
from carjax import extras
from carjax import inference
from carjax import logging_setup

_WORKDIR = flags.DEFINE_string("workdir", None, "A training workdir.")
_CHECKPOINT = flags.DEFINE_enum("checkpoint", "best", ["best", "last"], "Which checkpoint.")
_HOST = flags.DEFINE_string("host", "127.0.0.1",
                            "Address to listen on (0.0.0.0: reachable from other machines).")
_PORT = flags.DEFINE_integer("port", 8000, "Port to listen on.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging_setup.setup(logging.WARNING)
  extras.import_optional("flask", "demo", "The demo page")  # Before loading the model.
  model = demo.DemoModel(inference.Predictor(_WORKDIR.value, _CHECKPOINT.value))
  application = demo.create_app(model)
  print(f"carjax demo: {model.describe()}\nOpen http://{_HOST.value}:{_PORT.value}/ "
        "(Ctrl-C stops it).", flush=True)
  # Flask's own server: this page serves one person on their machine, one request at a time.
  application.run(host=_HOST.value, port=_PORT.value, threaded=False, debug=False,
                  load_dotenv=False)


if __name__ == "__main__":
  app.run(extras.exit_on_missing_extra(main))

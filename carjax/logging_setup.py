"""Log set-up for the launchers: our INFO lines, without orbax's per-save chatter."""

from absl import logging

_QUIET_PACKAGES = ("/orbax/", "/etils/", "/tensorflow_datasets/")


def _keep(record) -> bool:
  if record.levelno >= logging.converter.STANDARD_WARNING:
    return True
  return not any(p in record.pathname for p in _QUIET_PACKAGES)


def setup(verbosity: int = logging.INFO) -> None:
  logging.set_verbosity(verbosity)
  logging.get_absl_handler().addFilter(_keep)

"""Errors a user can fix (a bad option, a locked or mismatched workdir, unusable data).

The launchers (`carjax.cli.run`) print these as one line on stderr and exit with code 2; any
other exception is a bug and keeps its traceback. Each class also derives from the builtin
a caller would have caught before (ValueError, FileNotFoundError), so existing `except`
clauses keep working.
"""

from __future__ import annotations


class UserError(Exception):
  """Base of every expected error: the message says what is wrong and how to fix it."""


class ConfigError(UserError, ValueError):
  """A config value out of range, of an unknown name, or inconsistent with another."""


class DataError(UserError, ValueError):
  """The data cannot train or evaluate this run (no images, one class, an empty split)."""


class MissingPathError(UserError, FileNotFoundError):
  """A file or folder the user named does not exist or holds nothing usable."""


class WorkdirLockedError(UserError, RuntimeError):
  """Another live process is running in the same workdir."""


class WorkdirMismatchError(UserError, ValueError):
  """A rerun whose config, classes or model differ from those of the workdir's run."""


class NonFiniteError(UserError, FloatingPointError):
  """Training produced a NaN or infinite loss or gradient, or a checkpoint holds them."""


class CheckpointError(UserError, ValueError):
  """No intact checkpoint is left to restore."""

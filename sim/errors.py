"""User-facing errors: the entry points print these as one clear message, never a traceback."""


class SimError(Exception):
    """Base of every error caused by the user's input; the message says what and how to fix."""


class ConfigError(SimError):
    """A configuration that cannot work (bad value, unknown name, inconsistent settings)."""


class DoesNotFitError(ConfigError):
    """The model (or a request) does not fit in the memory available."""


class TraceError(SimError):
    """A malformed trace or length file; the message names the file and line."""


class OutputError(SimError):
    """The run folder cannot be used or written: in use by another run, not a directory,
    read-only, or the disk is full. The message names the folder and what was cleaned up."""

"""Exceptions for mistakes a user can fix.

Everything here derives from :class:`QgnnError`; ``train.py`` and ``eval.py`` print its
message (which names the problem and the fix) and exit non-zero without a traceback.
Programming errors inside qgnn stay ordinary exceptions and keep their traceback.
"""


class QgnnError(Exception):
    """A problem with the user's input: config, data files, graph or checkpoint."""


class ConfigError(QgnnError, ValueError):
    """An invalid config key, type or combination of settings."""


class DataError(QgnnError):
    """A dataset file that is missing, corrupt or malformed."""


class GraphError(QgnnError, ValueError):
    """A malformed graph: node ids out of range, inconsistent sizes."""


class CheckpointError(QgnnError):
    """A checkpoint that is missing, corrupt, truncated or not written by qgnn."""


class TrainingError(QgnnError):
    """Training cannot go on (non-finite loss); the message names epoch and tensor."""

"""User-facing error types: each names what is wrong and how to fix it."""


class VavaeLabError(Exception):
    """Base class for mistakes a user can fix; the CLI prints these without a traceback."""


class ConfigError(VavaeLabError, ValueError):
    """An unknown config key, a value of the wrong type, or an inconsistent setting."""


class DataError(VavaeLabError):
    """A dataset path that is missing, empty or unreadable, or a corrupt image in strict mode."""


class WeightsUnavailableError(VavaeLabError):
    """Pretrained weights were requested but cannot be found locally or downloaded."""


class CheckpointError(VavaeLabError):
    """A checkpoint that is missing, corrupt, or of another architecture."""


class NonFiniteLossError(VavaeLabError, FloatingPointError):
    """Training produced a NaN or infinite loss; the last good checkpoint is kept."""

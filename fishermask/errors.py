"""User-facing errors: the CLI prints their message and exits with code 2 (no traceback)."""


class FishermaskError(Exception):
    """Base class for errors caused by user input (config, data, budget, memory limits)."""


class ConfigError(FishermaskError):
    """The configuration is invalid: unknown key, wrong type, unknown name, impossible budget."""


class DataError(FishermaskError):
    """A dataset is missing or unusable; the message says how to get it."""


class TrainingDiverged(FishermaskError):
    """The training loss became NaN or infinite; the message says which setting to change."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an exception so that runs end KILLED with their checkpoint intact."""

"""User-facing errors: the CLI prints their message and exits with code 2 (no traceback)."""

import contextlib
import threading


class FishermaskError(Exception):
    """Base class for errors caused by user input (config, data, budget, memory limits)."""


class ConfigError(FishermaskError):
    """The configuration is invalid: unknown key, wrong type, unknown name, impossible budget."""


class DataError(FishermaskError):
    """A dataset is missing or unusable; the message says how to get it."""


class TrainingDiverged(FishermaskError):
    """The training loss became NaN or infinite; the message says which setting to change."""


class DiskFull(FishermaskError):
    """A write failed for lack of space; the message names the folder and what was kept."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an exception so that runs end KILLED with their checkpoint intact.
    ``received`` stays True once one came (a library may re-raise it as a KeyboardInterrupt)."""

    received = False
    pending = False
    """A SIGTERM came inside a :meth:`deferred` block: raised when the block ends."""
    _depth = 0

    @classmethod
    def deferring(cls) -> bool:
        """Whether the main thread is inside a :meth:`deferred` block."""
        return cls._depth > 0

    @classmethod
    @contextlib.contextmanager
    def deferred(cls):
        """Hold a SIGTERM's exception until the block ends (the main thread only).  For a
        tracking store's write: an exception raised inside SQLAlchemy's transaction can leave it
        open, the sqlite file locked, and the run's last write (status KILLED) waiting on that
        lock."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        cls._depth += 1
        try:
            yield
        finally:
            cls._depth -= 1
        if cls._depth == 0 and cls.pending:
            cls.pending = False
            raise cls()

    @classmethod
    def check(cls) -> None:
        """Raise it again if a SIGTERM came but its exception was lost: a signal handler's
        exception raised while the garbage collector runs a callback (or a ``__del__``) is
        printed and ignored by Python, and the work would go on.  Called between training
        batches and between rounds."""
        if cls.received:
            raise cls()


class MemoryLimitError(FishermaskError):
    """A computation would need more memory than its limit allows.  The message names the
    parameters that lower the need in the library's terms (``max_memory_gb``, ``sparsity``, …);
    :meth:`in_terms_of` renders it with other names for them (the config's dotted keys)."""

    def __init__(self, template: str, **values):
        self.template, self.values = template, values
        super().__init__(self.in_terms_of({}))

    def in_terms_of(self, names: dict[str, str]) -> str:
        import string

        fields = {f for _, f, _, _ in string.Formatter().parse(self.template) if f}
        return self.template.format(**{f: names.get(f, f) for f in fields - set(self.values)},
                                    **self.values)

    def renamed(self, names: dict[str, str]) -> "MemoryLimitError":
        """The same error, its message naming the parameters by ``names``."""
        err = MemoryLimitError(self.template, **self.values)
        err.args = (self.in_terms_of(names),)
        return err


class ParameterError(FishermaskError, ValueError):
    """A parameter's value cannot work with this model or pool (e.g. a FisherMask sparsity whose
    mask cannot hold the classifier).  The message starts with ``name=value:``, so the config
    layer can prefix its section (``strategy.``)."""

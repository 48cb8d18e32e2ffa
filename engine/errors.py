"""Errors raised by engine/; adapters and the CLI turn them into a one-line reply.

EngineError
 ├── ModelLoadError      a model file is missing, corrupt or not one of ours
 ├── BadRequestError     a generation argument is out of range (temperature <= 0, ...)
 └── SpeakerError        impersonation cannot go ahead for this person
      ├── UnknownSpeakerError
      ├── OptedOutError
      └── TooFewMessagesError
"""


class EngineError(Exception):
    """Root of every error engine/ raises on purpose."""


class ModelLoadError(EngineError):
    pass


class BadRequestError(EngineError):
    pass


class SpeakerError(EngineError):
    pass


class UnknownSpeakerError(SpeakerError):
    pass


class OptedOutError(SpeakerError):
    pass


class TooFewMessagesError(SpeakerError):
    pass


def damage(exc: BaseException) -> str:
    """One line for why a file could not be parsed: the error's type (BadZipFile, EOFError, ...) says more
    than numpy's or zipfile's message alone, which may run over several lines."""
    first = (str(exc).strip().splitlines() or [""])[0][:160]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__

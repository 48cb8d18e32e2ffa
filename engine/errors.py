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

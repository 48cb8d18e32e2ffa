"""Errors raised by training/ for bad input; the CLI maps them to one line and exit code 2.

TrainingError
 ├── BadInputError          a file is missing, empty, unreadable or too short
 ├── BadCheckpointError     a checkpoint cannot be read or does not describe a model
 ├── BadExportError         a chat export is not what it claims to be
 ├── EmptyCorpusError       nothing is left to train on after filtering
 ├── ApiError               a chat platform's Web API refused or failed a request
 ├── StoreError             the message store is missing, from a newer Mimic, or cannot be written
 └── UnknownUserError       no one (or more than one person) in the store goes by that name
"""


class TrainingError(Exception):
    """Root of every error training/ raises on purpose."""


class BadInputError(TrainingError):
    pass


class BadCheckpointError(TrainingError):
    pass


class BadExportError(TrainingError):
    pass


class EmptyCorpusError(TrainingError):
    pass


class StoreError(TrainingError):
    pass


class UnknownUserError(TrainingError):
    pass


class ApiError(TrainingError):
    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        self.code = code  # the platform's own error code ("channel_not_found", "missing_scope", ...), if any

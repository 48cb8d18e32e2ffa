"""Errors raised by bot/ for bad configuration or usage; mapped to exit code 2 / a private reply.

ConfigError          a setting is missing or invalid (names the key)
 └── SecretInConfigError   a secret was written into the config file
UsageError           a command was used wrongly (unknown command, missing argument, not allowed)
 └── RateLimitedError      slow down
ConnectError         a chat platform could not be reached (no network, a wrong SLACK_API_URL): names the call
"""


class ConfigError(Exception):
    pass


class SecretInConfigError(ConfigError):
    pass


class UsageError(Exception):
    pass


class RateLimitedError(UsageError):
    pass


class ConnectError(Exception):
    pass

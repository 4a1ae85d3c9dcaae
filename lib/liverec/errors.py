"""Errors that the command line reports as one clear line and a non-zero exit."""


class LiverecError(Exception):
    """A problem the user can fix (bad input, bad configuration); printed without a traceback."""


class ConfigError(LiverecError):
    """An unknown config key, a wrong type or an unreadable config file."""


class InputError(LiverecError):
    """Input data that cannot be ingested: missing, empty, binary or with the wrong columns."""


class BalanceError(LiverecError):
    """A job's row-count balance did not hold: rows would have been lost or invented."""

"""Errors a user can act on. Their message is the whole story: what is wrong and how to fix it."""


class UserError(Exception):
    """Bad input (config, data, folder): printed as one line, no traceback."""


class DataUnavailable(UserError):
    """The dataset is not on this machine and cannot be downloaded."""


class Diverged(Exception):
    """Training produced a non-finite loss; the run is recorded as `diverged`."""

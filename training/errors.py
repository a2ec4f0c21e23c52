"""The errors traindeck reports to users as one paragraph (never a traceback)."""


class TraindeckError(Exception):
    """An expected failure with a user-facing message; the CLI prints str(exc) and exits 2."""

    exit_code = 2


class RunNotFound(TraindeckError):
    """No run directory matches what the user named."""

"""Start-up errors: one line for the user, never a bare traceback."""


class StartupError(Exception):
    """A problem that stops `serve`/`validate`/`predict` before serving.

    str(error) is the whole user-facing line without the leading "error: ",
    e.g. 'cortex.yaml: api "iris": predictor.type: required'.
    """

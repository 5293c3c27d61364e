"""Bad analysis input, stated as one line (file, key, what to do); the CLI exits 2 on it."""

from ..errors import MapError


class InputError(MapError):
    """A data file, model spec, server or capture directory the analysis cannot use."""

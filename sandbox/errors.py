"""Why a server could not be started."""


class LaunchError(Exception):
    """A server that cannot be started as configured; the message says what to fix."""


class SandboxUnavailable(LaunchError):
    """The requested isolation does not exist on this machine: the server must not start at all."""

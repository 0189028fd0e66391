"""converged-bridge: the broker (API, state, routing, agent, CLI)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("converged-bridge")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"

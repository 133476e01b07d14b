"""lambda-hat: estimate the local learning coefficient (λ̂) of trained networks."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lambda-hat")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

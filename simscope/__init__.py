"""simscope: choose the base model for a reward model by how close its pretraining
distribution lies to your preference data.

Stages, one package each, data flowing one way through the tables in ``records``:
``probe`` -> ``lexical`` -> ``semantic`` -> ``overlap`` -> ``select`` -> ``report``.
"""

from importlib.metadata import PackageNotFoundError, version

from simscope.errors import SimscopeError

try:
    __version__ = version("simscope")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+source"

__all__ = ["SimscopeError", "__version__"]

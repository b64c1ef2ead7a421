"""What simscope lets libraries print: transformers' loading noise is silenced.

A model load in transformers draws a "Loading weights" bar and logs config notices on stderr;
they say nothing to a simscope user and break ``--quiet``. Every stage that loads a model
(the encoder, causal LMs, the demo's reward heads) loads it inside :func:`quiet_transformers`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """No weight-loading bar or config notices from transformers while a model loads."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()

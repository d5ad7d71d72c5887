"""procgen-trex: T-REX reward learning from ranked demonstrations on OpenAI Procgen."""

import contextlib as _contextlib
import io as _io

__version__ = "0.1.0"

# procgen depends on the unmaintained `gym`, whose import prints a multi-line notice on
# stderr that says nothing about this toolkit (we use gymnasium). Import it quietly once.
with _contextlib.redirect_stderr(_io.StringIO()):
    try:
        import gym as _gym  # noqa: F401
    except ImportError:
        pass

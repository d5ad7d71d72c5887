"""The toolkit's building blocks (no CLI code): environments, policies, demo store,
reward networks and T-REX training, metrics, plotting, video and run bookkeeping."""

import contextlib as _contextlib
import io as _io

# procgen depends on the unmaintained `gym`, whose import prints a multi-line notice on
# stderr that says nothing about this toolkit (we use gymnasium). Import it quietly once.
with _contextlib.redirect_stderr(_io.StringIO()):
    try:
        import gym as _gym  # noqa: F401
    except ImportError:
        pass

"""Network blocks used by both the policy and the reward side (the IMPALA CNN stacks).

Public names are imported on first use (``from trex.nets import X``), so importing the
package stays cheap and the sub-packages import no more of each other than they use."""

from trex._lazy import lazy_exports

_EXPORTS = {
    "ConvSequence": "trex.nets.impala",
    "EMBEDDING_DIM": "trex.nets.impala",
    "IMPALA_DEPTHS": "trex.nets.impala",
    "ResidualBlock": "trex.nets.impala",
    "impala_stacks": "trex.nets.impala",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

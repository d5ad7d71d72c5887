"""procgen-trex: T-REX reward learning from ranked demonstrations on OpenAI Procgen."""

__version__ = "0.1.0"

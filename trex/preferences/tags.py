"""The reward tag of a train_preferences run: what its checkpoints (and so test_policy's rows)
record as the reward, and what tables and figures label the run by. Torch-free, so the
plotting side reads a run's ``config.json`` with the same rule."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


def reward_tag(settings: Mapping[str, Any] | Any) -> str:
    """``preferences:<num_queries>:<selection>[+ties_equal][+centered][+end_penalty_<P>]
    [+continuous][:<init_reward>]`` from a :class:`TrainPreferencesConfig` or its ``args``
    mapping (config.json; settings a run predates take their defaults)."""
    s = settings.to_dict() if hasattr(settings, "to_dict") else dict(settings)
    how = [str(s.get("selection", "uniform"))]
    how += ["ties_equal"] * (s.get("ties") == "equal")
    how += ["centered"] * bool(s.get("center_reward"))
    if s.get("end_penalty"):
        how.append(f"end_penalty_{s['end_penalty']:g}")
    how += ["continuous"] * bool(s.get("continuous"))
    tag = f"preferences:{s.get('num_queries')}:{'+'.join(how)}"
    init = s.get("init_reward")
    return f"{tag}:{Path(init).stem}" if init else tag

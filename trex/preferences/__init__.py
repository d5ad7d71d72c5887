"""Learning a reward from preferences over the agent's own behaviour (Christiano et al. 2017,
arXiv 1706.03741), online while PPO trains: the synthetic labeller, the query schedule and
selection, the preference buffer, the reward fit, and the PPO loop (``train_preferences``).

Public names are imported on first use (``from trex.preferences import X``), so importing the
package stays cheap."""

from trex._lazy import lazy_exports

_EXPORTS = {
    "Comparisons": "trex.preferences.buffer",
    "FRAME_BYTES": "trex.preferences.buffer",
    "PreferenceBuffer": "trex.preferences.buffer",
    "load_round": "trex.preferences.buffer",
    "save_round": "trex.preferences.buffer",
    "NET_GROUP": "trex.preferences.config",
    "PREFS_GROUP": "trex.preferences.config",
    "START_GROUP": "trex.preferences.config",
    "TrainPreferencesConfig": "trex.preferences.config",
    "fit_on_buffer": "trex.preferences.fitting",
    "load_optimizer": "trex.preferences.fitting",
    "save_optimizer": "trex.preferences.fitting",
    "Labels": "trex.preferences.labeller",
    "SyntheticLabeller": "trex.preferences.labeller",
    "LearnerState": "trex.preferences.loop",
    "MODEL_NAME": "trex.preferences.loop",
    "MemberRewards": "trex.preferences.loop",
    "PREFERENCE_COLUMNS": "trex.preferences.loop",
    "PREFS_DIR": "trex.preferences.loop",
    "PreferenceLearner": "trex.preferences.loop",
    "PreferenceRewardVecEnv": "trex.preferences.loop",
    "RolloutRecord": "trex.preferences.loop",
    "RESUMABLE_CHANGES": "trex.preferences.run",
    "train_preferences": "trex.preferences.run",
    "HALF_RATE_FRACTION": "trex.preferences.schedule",
    "query_rounds": "trex.preferences.schedule",
    "query_schedule": "trex.preferences.schedule",
    "SELECTIONS": "trex.preferences.selection",
    "Segments": "trex.preferences.selection",
    "candidate_pairs": "trex.preferences.selection",
    "cut_segments": "trex.preferences.selection",
    "preference_disagreement": "trex.preferences.selection",
    "select_pairs": "trex.preferences.selection",
    "reward_tag": "trex.preferences.tags",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

"""The RL side: the IMPALA PPO policy with train-procgen's settings, PPO2's loss, PPO training
runs, checkpoints and their export, policy evaluation, and the reward wrappers that put a
learned or constant reward into a vectorised environment.

Public names are imported on first use (``from trex.rl import X``), so importing the
package stays cheap and the sub-packages import no more of each other than they use."""

from trex._lazy import lazy_exports

_EXPORTS = {
    "CHECKPOINT_FORMAT_VERSION": "trex.rl.checkpoints",
    "CHECKPOINT_META": "trex.rl.checkpoints",
    "MANIFEST_COLUMNS": "trex.rl.checkpoints",
    "MANIFEST_NAME": "trex.rl.checkpoints",
    "WEIGHTS_FORMAT": "trex.rl.checkpoints",
    "WEIGHTS_FORMAT_VERSION": "trex.rl.checkpoints",
    "WEIGHTS_META_KEY": "trex.rl.checkpoints",
    "WEIGHTS_SUFFIX": "trex.rl.checkpoints",
    "append_manifest": "trex.rl.checkpoints",
    "check_checkpoint_env": "trex.rl.checkpoints",
    "is_weights_file": "trex.rl.checkpoints",
    "load_policy": "trex.rl.checkpoints",
    "policy_weights": "trex.rl.checkpoints",
    "read_checkpoint_meta": "trex.rl.checkpoints",
    "read_manifest": "trex.rl.checkpoints",
    "restore_training_state": "trex.rl.checkpoints",
    "save_checkpoint": "trex.rl.checkpoints",
    "save_policy_weights": "trex.rl.checkpoints",
    "ActFn": "trex.rl.evaluation",
    "EpisodeStats": "trex.rl.evaluation",
    "episode_quotas": "trex.rl.evaluation",
    "load_act_fn": "trex.rl.evaluation",
    "random_act_fn": "trex.rl.evaluation",
    "run_episodes": "trex.rl.evaluation",
    "BEST": "trex.rl.export",
    "SCORE_COLUMNS": "trex.rl.export",
    "add_test_scores": "trex.rl.export",
    "export_checkpoints": "trex.rl.export",
    "select_checkpoints": "trex.rl.export",
    "ImpalaCNN": "trex.rl.policy",
    "ImpalaPolicy": "trex.rl.policy",
    "PPO_DEFAULTS": "trex.rl.policy",
    "TFAdam": "trex.rl.policy",
    "act": "trex.rl.policy",
    "action_logits": "trex.rl.policy",
    "baselines_init": "trex.rl.policy",
    "build_ppo": "trex.rl.policy",
    "precision_flags": "trex.rl.policy",
    "PPO2": "trex.rl.ppo2",
    "ppo2_loss": "trex.rl.ppo2",
    "ConstantRewardVecEnv": "trex.rl.reward_wrappers",
    "FrameRewardFn": "trex.rl.reward_wrappers",
    "LearnedRewardVecEnv": "trex.rl.reward_wrappers",
    "ReplacedRewardVecEnv": "trex.rl.reward_wrappers",
    "LearnedReturnSource": "trex.rl.training",
    "PPOConfig": "trex.rl.training",
    "PROGRESS_COLUMNS": "trex.rl.training",
    "PROGRESS_NAME": "trex.rl.training",
    "check_run_dir": "trex.rl.training",
    "find_resume_checkpoint": "trex.rl.training",
    "train_ppo": "trex.rl.training",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

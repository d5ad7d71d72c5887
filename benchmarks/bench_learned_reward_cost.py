"""Claim: PPO on a learned reward (train_policy --rm_id) costs at most 15% env-steps/s
against the true reward, same configuration.

The learned-reward arm wraps the Procgen env exactly as train_policy does (one batched
reward-network forward per step on the fast path). Arms are interleaved in one process;
one untimed warm-up update each.

    python benchmarks/bench_learned_reward_cost.py \
        --reward_model reward_models/model_files/123_4567.safetensors
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from stable_baselines3.common.vec_env import VecNormalize  # noqa: E402

from trex.common.device import use_bf16
from trex.common.envs import make_procgen_env
from trex.reward.model_file import RewardFunction, load_reward_function
from trex.reward.nets import build_net, prepare_net
from trex.rl.policy import build_ppo
from trex.rl.reward_wrappers import LearnedRewardVecEnv


def steps_per_s(args: argparse.Namespace, reward_fn: RewardFunction | None, seed: int) -> float:
    env = make_procgen_env(args.env_name, args.num_envs, seed=seed)
    inner = LearnedRewardVecEnv(env, reward_fn) if reward_fn is not None else env
    venv = VecNormalize(inner, norm_obs=False, norm_reward=True, gamma=0.999)
    model = build_ppo(
        venv,
        nsteps=args.nsteps,
        nminibatches=8,
        ppo_epochs=3,
        learning_rate=5e-4,
        gamma=0.999,
        lam=0.95,
        clip_range=0.2,
        ent_coef=0.01,
        seed=seed,
        device=torch.device("cpu"),
    )
    per_update = args.num_envs * args.nsteps
    model.learn(per_update)
    t0 = time.perf_counter()
    model.learn(per_update * args.updates, reset_num_timesteps=False)
    return per_update * args.updates / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--reward_model",
        default=None,
        help="a trained .safetensors (default: a fresh network of the same architecture)",
    )
    p.add_argument("--env_name", default="starpilot")
    p.add_argument("--num_envs", type=int, default=32)
    p.add_argument("--nsteps", type=int, default=128)
    p.add_argument("--updates", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    if args.reward_model:
        reward_fn = load_reward_function(args.reward_model, env_name=args.env_name, device="cpu")
    else:
        reward_fn = RewardFunction(
            prepare_net(build_net(), device), {}, device, use_bf16("auto", device)
        )
    results: dict[str, list[float]] = {"true": [], "learned": []}
    for rep in range(args.repeats):
        for name, fn in (("true", None), ("learned", reward_fn)):
            sps = steps_per_s(args, fn, seed=rep)
            results[name].append(sps)
            print(f"rep {rep} {name:>7}: {sps:7.1f} env-steps/s", flush=True)
    true, learned = (sum(v) / len(v) for v in (results["true"], results["learned"]))
    print(
        json.dumps(
            {
                "config": vars(args),
                "true_steps_per_s": round(true, 1),
                "learned_steps_per_s": round(learned, 1),
                "slowdown_pct": round(100 * (1 - learned / true), 1),
                "runs": results,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()

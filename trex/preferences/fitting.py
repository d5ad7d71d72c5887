"""Fitting the reward network on the preference buffer, warm-started round after round.

The loss and the step are T-REX's (:func:`trex.reward.passes.train_step`: the Bradley-Terry
loss of Christiano et al. 2017 eq. 1, which T-REX's Eq. 1 is, with the L1 term), on batches of
comparisons drawn from the whole buffer; the Adam state persists between rounds and is saved
with each checkpoint (safetensors, no pickle) so a resumed run continues the same optimiser.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch

from trex.common.errors import UserError
from trex.common.files import atomic_path
from trex.preferences.buffer import PreferenceBuffer
from trex.reward.nets import RewardNet
from trex.reward.passes import train_step
from trex.reward.trex import TrexConfig


def fit_on_buffer(
    net: RewardNet,
    opt: torch.optim.Optimizer,
    buffer: PreferenceBuffer,
    num_pairs: int,
    cfg: TrexConfig,
    rng: np.random.Generator,
    device: torch.device,
    bf16: bool,
    channels_last: bool = True,
) -> dict[str, float]:
    """``num_pairs`` comparisons of the buffer (a random order, repeated when the buffer holds
    fewer), in batches of ``cfg.batch_size``, one Adam step each. Returns the mean loss, the
    share of the batches' comparisons ordered right before each step (``fit_acc``), the pairs
    and the seconds. The net is left in eval mode."""
    t0 = time.perf_counter()
    demos, pairs = buffer.training_set()
    if len(pairs) == 0 or num_pairs == 0:
        return {"fit_loss": float("nan"), "fit_acc": float("nan"), "fit_pairs": 0, "fit_s": 0.0}
    reps = -(-num_pairs // len(pairs))
    order = np.concatenate([rng.permutation(len(pairs)) for _ in range(reps)])[:num_pairs]
    aug_rng = rng.spawn(1)[0] if cfg.augment != "none" else None
    net.train()
    loss_sum = right = 0.0
    for lo in range(0, num_pairs, cfg.batch_size):
        batch = pairs.take(order[lo : lo + cfg.batch_size])
        loss, ret, _, _ = train_step(
            net,
            opt,
            demos,
            batch,
            cfg.lam_l1,
            device,
            bf16,
            channels_last,
            cfg.max_batch_frames,
            cfg.augment,
            aug_rng,
        )
        loss_sum += loss * len(batch)
        right += float((ret[:, 1] > ret[:, 0]).sum())
    net.eval()
    return {
        "fit_loss": loss_sum / num_pairs,
        "fit_acc": right / num_pairs,
        "fit_pairs": int(num_pairs),
        "fit_s": time.perf_counter() - t0,
    }


def save_optimizer(path: str | os.PathLike, opt: torch.optim.Adam) -> Path:
    """Adam's state (per parameter: step, exp_avg, exp_avg_sq) as a safetensors file."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    for i, state in opt.state_dict()["state"].items():
        for key, value in state.items():
            t = value if isinstance(value, torch.Tensor) else torch.tensor(float(value))
            tensors[f"{i}.{key}"] = t.detach().to("cpu").contiguous()
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "trex-adam-state"})
    return path


def load_optimizer(path: str | os.PathLike, opt: torch.optim.Adam) -> None:
    """Restore :func:`save_optimizer`'s state into ``opt`` (built on the same parameters)."""
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path), device="cpu")
    except Exception as err:
        raise UserError(
            f"optimizer state {path} is missing or corrupt ({type(err).__name__})"
        ) from None
    state_dict = opt.state_dict()
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, t in tensors.items():
        i, _, key = name.partition(".")
        state.setdefault(int(i), {})[key] = t
    state_dict["state"] = state
    opt.load_state_dict(state_dict)

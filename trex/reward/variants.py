"""T-REX variants beyond the original project's recipe: the pieces shared by training,
evaluation, the saved reward function and PPO on the learned reward.

* Frame stacking (``frame_stack`` K): the network's input for frame t is frames
  t-K+1..t of the same demo/episode on the channel axis (3K channels, oldest first), the
  first frame repeated before the demo's start (Mnih et al. 2015's stack of the last frames,
  with Procgen's episodes as the unit). :func:`stack_indices` builds the stacks by index
  arithmetic on the demos' offsets, vectorised.
* Random-shift augmentation (``augment="shift"``; DrAC, Raileanu et al. 2020,
  arXiv 2006.12862; RAD, Laskin et al. 2020, arXiv 2004.14990): pad by 4 pixels with edge
  replication and crop a random 64x64 window, as one gather (:func:`random_shift`); training
  only. One shift per demo and optimizer step (:func:`draw_shifts`), so every frame of a
  snippet, and of its frame stack, moves together, and a frame shared by overlapping
  snippets still goes through the network once.
* :func:`variant_name`: the short name of a run's non-default choices (``seed`` for none).
* :func:`ensemble_spread`: how much the members of an ensemble disagree on demo returns.

Nothing here imports the network module (it imports this one).
"""

from __future__ import annotations

import numpy as np
import torch

from trex.common.errors import UserError

#: reward network architectures: the original project's small CNN, the IMPALA CNN encoder
ARCHITECTURES: tuple[str, ...] = ("seed_cnn", "impala")
#: training-time augmentations of the network input
AUGMENTATIONS: tuple[str, ...] = ("none", "shift")
#: random shift: pixels of edge-replicated padding on each side (RAD/DrAC's 4 for 64x64 frames)
SHIFT_PAD = 4


#: how train_trex picks the epoch it keeps (:func:`trex.reward.trex.selection_score`)
SELECTIONS = ("val_acc", "val_loss", "last")


def check_variant(
    *,
    architecture: str = "seed_cnn",
    frame_stack: int = 1,
    augment: str = "none",
    ensemble: int = 1,
    select_by: str = "val_acc",
) -> None:
    """UserError (one line, naming the flag) for a bad variant setting."""
    if architecture not in ARCHITECTURES:
        raise UserError(
            f"--architecture must be one of {', '.join(ARCHITECTURES)}, got {architecture!r}"
        )
    if (
        isinstance(frame_stack, bool)
        or not isinstance(frame_stack, (int, np.integer))
        or frame_stack < 1
    ):
        raise UserError(
            f"--frame_stack must be an integer >= 1 (1 = no stacking), got {frame_stack!r}"
        )
    if augment not in AUGMENTATIONS:
        raise UserError(f"--augment must be one of {', '.join(AUGMENTATIONS)}, got {augment!r}")
    if isinstance(ensemble, bool) or not isinstance(ensemble, (int, np.integer)) or ensemble < 1:
        raise UserError(
            f"--ensemble must be an integer >= 1 (1 = a single network), got {ensemble!r}"
        )
    if select_by not in SELECTIONS:
        raise UserError(f"--select_by must be one of {', '.join(SELECTIONS)}, got {select_by!r}")


def variant_name(
    *,
    use_clip_heuristic: bool = True,
    use_snippet_rewards: bool = False,
    frame_stack: int = 1,
    scale_frames: bool = False,
    augment: str = "none",
    architecture: str = "seed_cnn",
    ensemble: int = 1,
    select_by: str = "val_acc",
) -> str:
    """The non-default choices joined by ``+`` in a fixed order, e.g. ``stack4+shift+impala``
    (a model selection other than validation accuracy: ``sel_last``, ``sel_val_loss``);
    ``seed`` when every choice is the original project's."""
    parts = []
    if not use_clip_heuristic:
        parts.append("noclip")
    if use_snippet_rewards:
        parts.append("snippetrew")
    if frame_stack != 1:
        parts.append(f"stack{int(frame_stack)}")
    if scale_frames:
        parts.append("scaled")
    if augment != "none":
        parts.append(augment)
    if architecture != "seed_cnn":
        parts.append(architecture)
    if ensemble != 1:
        parts.append(f"ens{int(ensemble)}")
    if select_by != "val_acc":
        parts.append(f"sel_{select_by}")
    return "+".join(parts) or "seed"


# ----------------------------------------------------------------------------- frame stacks


def stack_indices(idx: np.ndarray, offsets: np.ndarray, k: int) -> np.ndarray:
    """Frame stacks by index arithmetic: int64 (N, k) indices into the frames for frames
    ``idx`` (N,) of demos laid end to end at ``offsets`` (n + 1,); row i is
    idx[i]-k+1 .. idx[i] (oldest first), each clamped to its demo's first frame."""
    idx = np.asarray(idx, dtype=np.int64).ravel()
    if k == 1:
        return idx[:, None]
    offsets = np.asarray(offsets, dtype=np.int64)
    first = offsets[np.searchsorted(offsets, idx, side="right") - 1]
    return np.maximum(idx[:, None] + np.arange(1 - k, 1, dtype=np.int64), first[:, None])


# ----------------------------------------------------------------------------- random shift


def draw_shifts(
    idx: np.ndarray, offsets: np.ndarray, rng: np.random.Generator, pad: int = SHIFT_PAD
) -> np.ndarray:
    """int64 (N, 2) shifts (dy, dx) in [-pad, pad] for frames ``idx`` (N,) of demos at
    ``offsets``: one random shift per demo, shared by all its frames."""
    idx = np.asarray(idx, dtype=np.int64).ravel()
    demo = np.searchsorted(np.asarray(offsets, dtype=np.int64), idx, side="right") - 1
    uniq, inv = np.unique(demo, return_inverse=True)
    return rng.integers(-pad, pad + 1, size=(len(uniq), 2))[inv.ravel()].astype(np.int64)


def random_shift(x: torch.Tensor, shifts: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Shift images x (N, C, H, W) by ``shifts`` (N, 2) = (dy, dx) pixels with edge
    replication: out[n, :, i, j] = x[n, :, clamp(i + dy), clamp(j + dx)]. This equals
    RAD/DrAC's pad-by-``pad`` (replicate) then crop at offset (pad + dy, pad + dx), done as
    one gather with no padded copy. Keeps ``x``'s memory format (channels_last stays so)."""
    n, _, h, w = x.shape
    s = torch.as_tensor(np.asarray(shifts), dtype=torch.long, device=x.device).reshape(n, 2)
    rows = (torch.arange(h, device=x.device)[None, :] + s[:, :1]).clamp_(0, h - 1)  # (N, H)
    cols = (torch.arange(w, device=x.device)[None, :] + s[:, 1:]).clamp_(0, w - 1)  # (N, W)
    nhwc = x.permute(0, 2, 3, 1)  # a view; contiguous when x is channels_last
    out = nhwc[torch.arange(n, device=x.device)[:, None, None], rows[:, :, None], cols[:, None, :]]
    out = out.permute(0, 3, 1, 2)  # (N, C, H, W), channels_last in memory
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return out
    return out.contiguous()


# ----------------------------------------------------------------------------- ensembles


def ensemble_spread(member_returns: np.ndarray) -> tuple[float, float]:
    """Disagreement of an ensemble on demo returns: member_returns (K, n), each member's
    predicted return of n demos. Returns (spread, relative spread): spread is the standard
    deviation over members (ddof 0) averaged over the demos; relative spread divides it by
    the standard deviation over demos of the ensemble's (mean) predicted return, so it does
    not depend on the reward's arbitrary scale. NaN for fewer than 2 members or demos."""
    r = np.asarray(member_returns, dtype=np.float64)
    if r.ndim != 2 or r.shape[0] < 2 or r.shape[1] < 1:
        return float("nan"), float("nan")
    spread = float(r.std(axis=0).mean())
    between = float(r.mean(axis=0).std()) if r.shape[1] >= 2 else float("nan")
    rel = spread / between if between > 0 else float("nan")
    return spread, rel

"""The IMPALA CNN blocks (Espeholt et al. 2018, arXiv 1802.01561), shared by the PPO policy
(:mod:`trex.rl.policy`) and the IMPALA reward network (:mod:`trex.reward.nets`): conv3x3 ->
max-pool 3x3/2 -> two residual blocks, one stack per depth."""

from __future__ import annotations

import torch
from torch import nn

IMPALA_DEPTHS = (16, 32, 32)
#: width of the dense layer after the IMPALA stacks
EMBEDDING_DIM = 256


class ResidualBlock(nn.Module):
    """relu -> conv3x3 -> relu -> conv3x3, plus the input (IMPALA)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv1(torch.relu(self.conv0(torch.relu(x))))


class ConvSequence(nn.Module):
    """conv3x3 -> max-pool 3x3 stride 2 ('same' padding) -> 2 residual blocks:
    (N,C,H,W) -> (N,D,H/2,W/2)."""

    def __init__(self, in_channels: int, depth: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, depth, 3, padding=1)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.res0 = ResidualBlock(depth)
        self.res1 = ResidualBlock(depth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res1(self.res0(self.pool(self.conv(x))))


def impala_stacks(
    in_channels: int, height: int, width: int, depths: tuple[int, ...] = IMPALA_DEPTHS
) -> tuple[nn.Sequential, int]:
    """The IMPALA CNN's conv sequences: (module mapping (N, in_channels, H, W) to
    (N, depths[-1], H', W'), the flattened size depths[-1] * H' * W')."""
    c, h, w = in_channels, height, width
    stacks = []
    for depth in depths:
        stacks.append(ConvSequence(c, depth))
        c, h, w = depth, (h + 1) // 2, (w + 1) // 2
    return nn.Sequential(*stacks), c * h * w

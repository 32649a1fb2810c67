"""Shared tiny models for the core tests (models, split, methods).

Everything here is small enough to run in milliseconds on a CPU: a few convolutions on 16x16
inputs. The expensive networks (ResNet-18/50, EfficientNet-Lite0) are built in the test modules
that need them, with module-scoped fixtures.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn


class TinyNet(nn.Module):
    """conv-relu, strided conv-relu, a residual conv, a non-linear MLP head.

    ``conv3`` sits inside the residual connection, so splitting at it must cache ``act2``'s
    output (the skip input); ``act2`` is followed by an in-place-free tail.
    """

    def __init__(self, num_classes: int = 5, width: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(6, width, 3, stride=2, padding=1)
        self.act2 = nn.ReLU()
        self.conv3 = nn.Conv2d(width, width, 3, padding=1)
        self.act3 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Linear(width, 16)
        self.act4 = nn.Tanh()
        self.fc2 = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.conv1(x))
        x = self.act2(self.conv2(x))
        x = self.act3(x + self.conv3(x))
        x = torch.flatten(self.pool(x), 1)
        return self.fc2(self.act4(self.fc1(x)))


class UntraceableNet(TinyNet):
    """TinyNet with data-dependent Python control flow, which torch.fx cannot trace."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.conv1(x))
        if float(x.detach().mean()) > -1.0:  # always true, but fx cannot know that
            x = self.act2(self.conv2(x))
        x = self.act3(x + self.conv3(x))
        x = torch.flatten(self.pool(x), 1)
        return self.fc2(self.act4(self.fc1(x)))


class InplaceNet(nn.Module):
    """The target layer ``bn`` is followed by ``ReLU(inplace=True)``, as in ResNet blocks."""

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn(self.conv(x)))
        x = torch.relu(self.conv2(x)) + x
        return self.fc(torch.flatten(self.pool(x), 1))


class ConstantChannelNet(nn.Module):
    """``act1`` has constant channels: 0 and 1 are always 0, channel 2 is always 0.5; channel 3
    varies, but only by about 1e-9 (where pytorch-grad-cam's ``+ 1e-8`` matters).

    The rest of the network is an ordinary small CNN, so ScoreCAM's masked inputs matter.
    """

    ZERO = (0, 1)
    HALF = 2
    FAINT = 3

    def __init__(self, num_classes: int = 6, width: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, stride=2, padding=1)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(width, 12, 3, padding=1)
        self.act2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(12, num_classes)
        with torch.no_grad():
            for k in (*self.ZERO, self.HALF):
                self.conv1.weight[k] = 0
                self.conv1.bias[k] = 0.5 if k == self.HALF else -0.1
            self.conv1.bias[0] = 0.0
            self.conv1.weight[self.FAINT] *= 1e-9
            self.conv1.bias[self.FAINT] = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act2(self.conv2(self.act1(self.conv1(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def _make(cls: type[nn.Module], seed: int, dtype: torch.dtype, **kwargs) -> nn.Module:
    torch.manual_seed(seed)
    model = cls(**kwargs).eval().to(dtype)
    if any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        with torch.no_grad():  # non-trivial running statistics
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.5, 0.5)
                    m.running_var.uniform_(0.5, 2.0)
    return model


@pytest.fixture
def tiny_model() -> nn.Module:
    """TinyNet in float64, eval mode, fixed seed."""
    return _make(TinyNet, 0, torch.float64)


@pytest.fixture
def untraceable_model() -> nn.Module:
    return _make(UntraceableNet, 0, torch.float64)


@pytest.fixture
def inplace_model() -> nn.Module:
    return _make(InplaceNet, 1, torch.float64)


@pytest.fixture
def constant_model() -> nn.Module:
    return _make(ConstantChannelNet, 2, torch.float64)


@pytest.fixture
def tiny_inputs() -> torch.Tensor:
    """Three 16x16 images, float64."""
    torch.manual_seed(123)
    return torch.randn(3, 3, 16, 16, dtype=torch.float64)


@pytest.fixture(scope="module")
def single_thread():
    """Run torch on one CPU thread for a module's tests, restoring the setting after.

    These tests run many small float64 forward passes; on a shared 2-core machine torch's
    intra-op threads spin against each other and make some of them 100x slower.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

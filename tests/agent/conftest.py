"""Shared fixtures for the agent tests: a tiny learnable .npz and a CLI runner."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from timm.models import register_model

# Pretrained weights must fail fast instead of retrying the Hugging Face hub for a minute.
os.environ["HF_HUB_OFFLINE"] = "1"

ROOT = Path(__file__).resolve().parents[2]


def _make_npz(path: Path, *, n=(24, 9, 9), size=16, classes=3, seed=0, **overrides) -> Path:
    """A MedMNIST-layout file of grey images whose class sets which band is bright."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in zip(("train", "val", "test"), n):
        labels = np.arange(count) % classes
        images = rng.integers(0, 60, (count, size, size), dtype=np.uint8)
        band = size // classes
        for i, label in enumerate(labels):
            images[i, label * band : (label + 1) * band] += 150
        arrays[f"{split}_images"] = images
        arrays[f"{split}_labels"] = labels.reshape(-1, 1)
    arrays.update(overrides)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


@pytest.fixture(scope="session")
def make_npz():
    """`make_npz(path, n=(train, val, test), size=16, classes=3, **arrays to replace or drop)`."""
    return _make_npz


@pytest.fixture(scope="session")
def tiny_npz(tmp_path_factory) -> Path:
    return _make_npz(tmp_path_factory.mktemp("data") / "tiny.npz")


@pytest.fixture
def cli(capsys):
    """Run `pepr-agent` in this process; returns (exit code, stdout, stderr)."""
    from agent.cli import main

    def run(*argv: str):
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def _agent_command(*argv) -> list[str]:
    return [sys.executable, "-m", "agent", *map(str, argv)]


@pytest.fixture(scope="session")
def agent_command():
    """The command line of `python -m agent ARGV...`."""
    return _agent_command


@pytest.fixture(scope="session")
def run_agent():
    """Run `python -m agent ...` in a fresh process from the repository root."""

    def run(*argv, timeout=300) -> subprocess.CompletedProcess:
        return subprocess.run(
            _agent_command(*argv), cwd=ROOT, capture_output=True, text=True, timeout=timeout
        )

    return run


@pytest.fixture(scope="session")
def digest():
    """A file's SHA-256, or None if it does not exist."""

    def sha256(path: Path) -> str | None:
        return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None

    return sha256


# Two timm architectures for the tests, registered once: one that rejects channels_last (its
# first step is a `view` that a channels_last tensor cannot take), one whose loss is NaN.
class _Flatten(torch.nn.Module):
    def __init__(self, num_classes=3, in_chans=3, poison=False, **kwargs):
        super().__init__()
        self.conv = torch.nn.Conv2d(in_chans, 4, 3, padding=1)
        self.head = torch.nn.Linear(16, num_classes)
        self.poison = poison
        self.pretrained_cfg = {}

    def forward(self, x):
        x = self.conv(x).view(x.shape[0], 1, -1)  # a channels_last tensor cannot be viewed so
        out = self.head(torch.nn.functional.adaptive_avg_pool1d(x, 16).flatten(1))
        return out * float("nan") if self.poison else out


@register_model
def pepr_test_rejects_channels_last(pretrained=False, **kwargs):
    kwargs.pop("pretrained_cfg", None)
    return _Flatten(**kwargs)


@register_model
def pepr_test_nan_loss(pretrained=False, **kwargs):
    kwargs.pop("pretrained_cfg", None)
    return _Flatten(poison=True, **kwargs)

"""The ``torch.spyre`` device module of the emulated spyre device.

torch-spyre registers a module of this name; PyTorch looks the device up there
(``torch.get_device_module("spyre")``), and ``torch.library.opcheck`` and
``torch.compile`` use its RNG-state functions. The emulated device has one
device, ``spyre:0``; its random numbers come from the CPU generator (the ops
that draw them run on the CPU fallback).
"""

from __future__ import annotations

import torch


def is_available() -> bool:
    """True: the emulated device is always there once enabled."""
    return True


def device_count() -> int:
    """The number of emulated spyre devices: 1."""
    return 1


def current_device() -> int:
    """The index of the current spyre device: 0."""
    return 0


def synchronize(device: object = None) -> None:
    """Waits for the device: a no-op, the emulated device runs synchronously."""


def get_rng_state(device: object = None) -> torch.Tensor:
    """The RNG state of the device: that of the CPU generator it shares."""
    return torch.get_rng_state()


def set_rng_state(new_state: torch.Tensor, device: object = None) -> None:
    """Sets the RNG state of the device (the CPU generator's)."""
    torch.set_rng_state(new_state)


def manual_seed(seed: int) -> None:
    """Seeds the device's RNG (the CPU generator)."""
    torch.default_generator.manual_seed(seed)


def _is_in_bad_fork() -> bool:
    """False: the emulated device has no state a fork could break (``torch.manual_seed`` asks)."""
    return False


def manual_seed_all(seed: int) -> None:
    """Seeds every device's RNG: the same as :func:`manual_seed`, there is one device."""
    torch.default_generator.manual_seed(seed)

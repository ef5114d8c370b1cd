"""Where the chapters run: the GPU when there is one, else the CPU."""

import torch


def default_device() -> torch.device:
    """``cuda`` when a CUDA GPU is visible, otherwise ``cpu``."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")

"""A per-edge reference supernet and its fused twin with identical parameters, for equivalence tests."""
import dataclasses

import torch

from hwnas.spaces.supernet import Supernet, SupernetConfig


def reference_and_fused(cfg: SupernetConfig, seed: int) -> tuple[Supernet, Supernet]:
    """(reference, fused) float64 supernets of `cfg` with identical parameters and randomised BN buffers,
    distinct per BN, so eval mode checks every edge's own statistics."""
    torch.manual_seed(seed)
    ref = Supernet(dataclasses.replace(cfg, fused=False)).double()
    with torch.no_grad():
        for m in ref.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
    fused = Supernet(dataclasses.replace(cfg, fused=True)).double()
    fused.load_state_dict(ref.state_dict())
    return ref, fused

"""The network `hwnas prune` starts from: a state dict (checked for shape), torchvision's ImageNet weights or one
trained here, inner channels put in importance order; a network near chance is refused (`check_start`)."""
from __future__ import annotations

import torch
from torch import nn

from hwnas.config import PruneConfig
from hwnas.errors import HwnasError
from hwnas.spaces.gated_resnet import reorder_by_importance


def _imagenet_state() -> dict:
    from torchvision.models import ResNet18_Weights

    try:
        return ResNet18_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
    except (OSError, RuntimeError, ValueError) as e:  # URLError, HTTPError, SSL, timeouts: not downloadable here
        raise HwnasError(f"--weights imagenet: torchvision's ResNet18 ImageNet weights could not be downloaded "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); offline, pass "
                         f"--weights PATH (a state dict) or --weights train") from None


def load_state(path: str) -> dict:
    """A ResNet18 state dict from a file: a plain state dict, or a dict holding one under 'model'/'state_dict'."""
    from hwnas.runs import load_torch_file

    state = load_torch_file(path, "a state dict (--weights)", "weights file")
    if isinstance(state, dict):
        state = state.get("model", state.get("state_dict", state))
    if not isinstance(state, dict):
        raise HwnasError(f"--weights {path} does not hold a state dict")
    return state


def pretrained_model(cfg: PruneConfig, data, on_step=None, on_epoch_end=None) -> tuple[nn.Module, dict]:
    """The network to prune (CPU, eval mode, inner channels in importance order) and where it came from."""
    from hwnas.latency.resnet_keys import torchvision_resnet18
    from hwnas.train import TrainConfig, resnet18_space, train_network

    space = resnet18_space(cfg.dataset, cfg.data_dir)
    source: dict = {"weights": cfg.weights}
    if cfg.weights in ("train", "imagenet"):
        initial = _imagenet_state() if cfg.weights == "imagenet" else None
        if cfg.pretrain_epochs == 0:
            raise HwnasError(f"--weights {cfg.weights} needs --pretrain-epochs ≥ 1")
        tcfg = TrainConfig(model="resnet18", dataset=cfg.dataset, data_dir=cfg.data_dir, epochs=cfg.pretrain_epochs,
                           batch_size=cfg.pretrain_batch_size, lr=cfg.pretrain_lr, drop_path_prob=0.0, seed=cfg.seed,
                           device=cfg.device, amp=False)
        result = train_network(None, tcfg, splits=data.pretrain_splits(), on_step=on_step, on_epoch_end=on_epoch_end,
                               initial_state=initial)
        model = result.model.cpu()
        source.update(pretrain_epochs=cfg.pretrain_epochs, trained_on="weights half of the train split")
    else:
        model = torchvision_resnet18(space)
        state = load_state(cfg.weights)
        mismatch = state_mismatch(model.state_dict(), state)
        if mismatch:
            raise HwnasError(f"--weights {cfg.weights} is not a ResNet18 for {cfg.dataset} "
                             f"({space.in_channels} input channel(s), {space.num_classes} classes, "
                             f"{'small' if space.small_stem else 'ImageNet'} stem): {mismatch}")
        model.load_state_dict(state)
    model = reorder_by_importance(model.eval())
    return model, source


def state_mismatch(own: dict, state: dict) -> str:
    """Why `state` does not fit a network whose state dict is `own` ('' when it fits): classes, input channels,
    stem, or the first differing tensors, in words."""
    shapes = {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}
    fc, conv = shapes.get("fc.weight"), shapes.get("conv1.weight")
    if fc is not None and len(fc) == 2 and fc != tuple(own["fc.weight"].shape):
        return f"its classifier has {fc[0]} classes, the dataset {own['fc.weight'].shape[0]}"
    if conv is not None and len(conv) == 4 and conv != tuple(own["conv1.weight"].shape):
        want = tuple(own["conv1.weight"].shape)
        if conv[1] != want[1]:
            return f"its first convolution takes {conv[1]} input channel(s), the dataset has {want[1]}"
        return f"its stem convolution is {conv[2]}×{conv[3]}, this dataset's ResNet18 has {want[2]}×{want[3]}"
    missing = [k for k in own if k not in shapes]
    unexpected = [k for k in shapes if k not in own]
    wrong = [f"{k} {shapes[k]} (needs {tuple(own[k].shape)})" for k in own if k in shapes
             and shapes[k] != tuple(own[k].shape)]
    parts = [f"{len(missing)} missing tensor(s) ({', '.join(missing[:3])}{', …' if len(missing) > 3 else ''})"
             if missing else "",
             f"{len(unexpected)} unexpected tensor(s) ({', '.join(unexpected[:3])}{', …' if len(unexpected) > 3 else ''})"
             if unexpected else "",
             f"{len(wrong)} of another shape ({', '.join(wrong[:2])}{', …' if len(wrong) > 2 else ''})" if wrong else ""]
    return "; ".join(p for p in parts if p)


START_MARGIN = 0.1   # a starting network must be a tenth of the way from chance to 100 % validation accuracy


def check_start(val_acc: float, y_val: torch.Tensor, num_classes: int, what: str) -> None:
    """Refuse a starting network near chance: pruning a network that has learnt nothing finds nothing to keep
    (every λ > 0 then prunes to the cheapest gate set). Chance is the majority class's share of the labels."""
    counts = torch.bincount(y_val.cpu(), minlength=num_classes)
    chance = float(counts.max()) / float(counts.sum())
    need = chance + START_MARGIN * (1.0 - chance)
    if val_acc < need:
        raise HwnasError(f"{what} is at {100 * val_acc:.1f} % validation accuracy, near chance ({100 * chance:.1f} %; "
                         f"pruning needs ≥ {100 * need:.1f} %): train it first (hwnas train --model resnet18, or "
                         f"--weights train with more --pretrain-epochs)")

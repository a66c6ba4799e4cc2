"""Class activation maps of any network, read at layers named in its registry entry (`CamLayers`).

* `class_activation_map` (CAM, Zhou et al.): the classifier's weights of one class over the maps it
  global-average-pools; needs no gradient, so it also runs inside an exported ONNX graph;
* `grad_cam` (Selvaraju et al.): the activations of named modules weighted by the channel-mean of the
  gradients of the class score, ReLU'd, upsampled to the input grid (2D or 3D).

The networks only compute; which layer a map is read at is the registry's business.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

#: the class score Grad-CAM differentiates: the raw logit, or the log-odds against the other classes
SCORES: tuple[str, ...] = ("logit", "log-odds")


def _upsample(maps: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """(N, 1, *grid) -> (N, *size): bilinear in 2D, trilinear in 3D (align_corners=False)."""
    mode = "bilinear" if maps.ndim == 4 else "trilinear"
    return nn.functional.interpolate(maps, size=tuple(size), mode=mode, align_corners=False)[:, 0]


def class_activation_map(model: nn.Module, x: torch.Tensor, class_index: int, features: str = "features",
                         classifier: str = "fc") -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and the CAM of `class_index` upsampled to the input size, (N, H, W) (unscaled).

    Args:
        features: the model's method (or module) giving the maps the classifier global-average-pools.
        classifier: the linear layer over the pooled maps.
    """
    get_features: Callable[[torch.Tensor], torch.Tensor] = _attribute(model, features)
    fc: nn.Linear = _attribute(model, classifier)
    feats = get_features(x)
    spatial = tuple(range(2, feats.ndim))
    logits = fc(feats.mean(dim=spatial))
    grid = "hw" if feats.ndim == 4 else "thw"
    cam = torch.einsum(f"c,nc{grid}->n{grid}", fc.weight[class_index], feats)
    return logits, _upsample(cam[:, None], x.shape[2:])


def grad_cam(model: nn.Module, x: torch.Tensor, class_index: int, layers: Sequence[str], score: str = "logit",
             scale: bool = False, proceed: Callable[[torch.Tensor], bool] | None = None,
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Logits and the Grad-CAM map of `class_index` at each named layer, on the input grid (N, *spatial).

    Args:
        layers: dotted module names (e.g. "trunk.fires.0", "res_b").
        score: "logit", or "log-odds" (the class's logit minus the log-sum-exp of the others: what moves the
            decision).
        scale: divide each sample's map by its maximum (all zero where there is no evidence).
        proceed: called with the (detached) logits after the forward pass; when it returns False there is no
            backward pass and every map is zero (a caller that needs no map for this batch saves the backward).

    Raises:
        RuntimeError: called inside `torch.inference_mode()` (no gradients there).
        ValueError: an unknown layer or score.
    """
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    if torch.is_inference_mode_enabled():
        raise RuntimeError("Grad-CAM needs gradients: call it outside torch.inference_mode()")
    modules = dict(model.named_modules())
    unknown = [name for name in layers if not name or name not in modules]
    if unknown:
        raise ValueError(f"unknown CAM layer(s) {unknown} of {type(model).__name__}")
    acts: dict[str, torch.Tensor] = {}
    hooks = [modules[name].register_forward_hook(_keep(acts, name)) for name in layers]
    try:
        # no graph up to the first named layer (its output becomes a leaf there, `_keep`): nothing before it is
        # differentiated, and the layers before it run as in inference (a third of the light model's time)
        with torch.no_grad():
            logits = model(x.detach())
        with torch.enable_grad():
            if proceed is not None and not proceed(logits.detach()):
                zeros = torch.zeros((x.shape[0], *x.shape[2:]), dtype=logits.dtype, device=x.device)
                return logits.detach(), {name: zeros for name in layers}
            index = class_index % logits.shape[1]
            target = logits[:, index]
            if score == "log-odds":
                others = torch.cat([logits[:, :index], logits[:, index + 1 :]], dim=1)
                target = target - torch.logsumexp(others, dim=1)
            grads = torch.autograd.grad(target.sum(), [acts[name] for name in layers])
    finally:
        for h in hooks:
            h.remove()
    maps = {}
    for name, grad in zip(layers, grads):
        a = acts[name].detach()
        spatial = tuple(range(2, a.ndim))
        m = _upsample(torch.relu((grad.mean(dim=spatial, keepdim=True) * a).sum(dim=1, keepdim=True)), x.shape[2:])
        if scale:
            m = m / m.flatten(1).amax(dim=1).clamp(min=1e-12).view(-1, *([1] * (m.ndim - 1)))
        maps[name] = m
    return logits.detach(), maps


def _attribute(model: nn.Module, dotted: str):
    """`model.a.b` for "a.b" (a method or a module)."""
    out = model
    for part in dotted.split("."):
        out = getattr(out, part)
    return out


def _keep(store: dict[str, torch.Tensor], name: str):
    """A forward hook that keeps the layer's output for Grad-CAM and turns gradients on from there (the forward
    began without them): an output that needs no gradient yet is replaced by a copy that does."""

    def hook(_module: nn.Module, _inputs, output: torch.Tensor) -> torch.Tensor:
        torch.set_grad_enabled(True)  # thread-local; `grad_cam`'s `no_grad` block restores the mode on leaving
        if not output.requires_grad:
            # a copy of a leaf, not the leaf: a later in-place op (an in-place ReLU) must not modify a leaf
            output = output.detach().requires_grad_(True).clone()
        store[name] = output
        return output

    return hook

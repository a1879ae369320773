"""GradCAM on BLIP's text-to-image cross-attention, driven by the raw ITM match logit."""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

from .prompts import PromptBatch


def share_image_projections(model) -> None:
    """Compute cross-attention keys/values of the image tokens once per batch of captions.

    Captions in a batch see the same image (`expand`ed, batch stride 0), yet each layer would project its
    N image tokens once per caption: with 20 classes that is most of the frame's compute. These hooks run the
    projection on one copy and broadcast the result: the same numbers, C times fewer multiplications.
    Installed once per model; state_dict and outputs are unchanged.
    """
    if getattr(model, "_ovss_shared_projections", False):
        return

    def before(module, args):
        x = args[0]
        module._ovss_batch = x.shape[0] if x.dim() == 3 and x.shape[0] > 1 and x.stride(0) == 0 else None
        return (x[:1],) + tuple(args[1:]) if module._ovss_batch else None

    def after(module, _args, out):
        return out.expand(module._ovss_batch, *out.shape[1:]) if module._ovss_batch else None

    for proj in image_projections(model):
        proj.register_forward_pre_hook(before)
        proj.register_forward_hook(after)
    model._ovss_shared_projections = True


def image_projections(model):
    """The key and value projections of every text layer's cross-attention: the only modules that see
    the image tokens."""
    for layer in model.text_encoder.encoder.layer:
        cross = getattr(layer, "crossattention", None)
        if cross is not None:
            yield cross.self.key
            yield cross.self.value


def itm_forward(model, prompts: PromptBatch, image_embeds: torch.Tensor, output_attentions: bool):
    """Text encoder over image tokens, then the ITM head on the first ([ENC]) position.

    Called directly rather than through `BlipForImageTextRetrieval.forward`, which neither returns
    cross-attentions nor applies [ENC] (see docs/deviations.md).
    """
    b = prompts.input_ids.shape[0]
    if image_embeds.shape[0] != b:
        image_embeds = image_embeds.expand(b, -1, -1)
    image_mask = torch.ones(image_embeds.shape[:2], dtype=torch.long, device=image_embeds.device)
    out = model.text_encoder(input_ids=prompts.input_ids, attention_mask=prompts.attention_mask,
                             encoder_hidden_states=image_embeds, encoder_attention_mask=image_mask,
                             output_attentions=output_attentions, return_dict=True)
    logits = model.itm_head(out.last_hidden_state[:, 0, :])
    return logits, out


def token_gradcam(model, prompts: PromptBatch, image_embeds: torch.Tensor, layers: Sequence[int],
                  head: Union[int, str], kept: Optional[torch.Tensor] = None,
                  n_patches: Optional[int] = None) -> torch.Tensor:
    """Per-token GradCAM maps [B, T, N] over image patches (image CLS key dropped).

    GC = A * relu(dL/dA) on the chosen head (or the mean over heads), summed over `layers`; L is the
    raw ITM match logit summed over captions (captions do not interact, so each gets its own gradient).
    `kept` lists the patch indices present in `image_embeds` (attention-mode dropout removes the
    others); their maps are scattered back to the full grid of `n_patches`.
    """
    image_embeds = image_embeds.detach().requires_grad_(True)   # leaf: builds the graph with frozen weights
    with torch.enable_grad():
        logits, out = itm_forward(model, prompts, image_embeds, output_attentions=True)
        attns = [out.cross_attentions[i] for i in layers]
        grads = torch.autograd.grad(logits[:, 1].sum(), attns)
    gc = None
    for a, g in zip(attns, grads):
        cam = a.detach()[:, :, :, 1:] * g[:, :, :, 1:].clamp(min=0)
        cam = cam.mean(dim=1) if head == "mean" else cam[:, int(head)]
        gc = cam if gc is None else gc + cam
    gc = gc.float() * prompts.attention_mask[:, :, None].to(gc.dtype)
    if kept is not None:
        full = gc.new_zeros(gc.shape[0], gc.shape[1], n_patches)
        full[:, :, kept] = gc
        gc = full
    return gc


def class_maps(token_maps: torch.Tensor, prompts: PromptBatch) -> torch.Tensor:
    """Merge token rows into one map per class: the mean over the class's rows -> [C, N]."""
    maps = [token_maps[prompts.class_caption[c], prompts.rows_of(c)].mean(dim=0)
            for c in range(len(prompts.class_caption))]
    return torch.stack(maps)


def ranking_map(token_maps: torch.Tensor, prompts: PromptBatch) -> torch.Tensor:
    """Salience used to pick patches to drop: the sum of every class token row -> [N]."""
    rows = {(prompts.class_caption[c], r) for c in range(len(prompts.class_caption)) for r in prompts.rows_of(c)}
    caps = torch.tensor([c for c, _ in rows], device=token_maps.device)
    idx = torch.tensor([r for _, r in rows], device=token_maps.device)
    return token_maps[caps, idx].sum(dim=0)

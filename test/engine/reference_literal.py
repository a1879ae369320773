"""The project's own step-by-step reference of PnP-OVSS as the authors run it (github.com/letitiabanana/PnP-OVSS:
preprocessing, GradCAM, Salience Dropout, threshold, background, blur and DenseCRF, as listed in
docs/deviations.md), written independently of the engine so the engine can be checked against it.

Plain on purpose: full autograd through the whole model with loss.backward() and a hook that keeps the
attention probabilities' gradient (as LAVIS did), numpy argsort for the patch choice, scipy's
gaussian_filter and pydensecrf for post-processing, a lookup table for the final labels.
"""
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.ndimage import gaussian_filter

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def preprocess(rgb, size):
    img = Image.fromarray(rgb).resize((size, size), Image.BICUBIC)        # Resize((s, s), BICUBIC)
    x = torch.from_numpy(np.asarray(img, np.float32) / 255.0).permute(2, 0, 1)   # ToTensor
    x = (x - torch.tensor(CLIP_MEAN)[:, None, None]) / torch.tensor(CLIP_STD)[:, None, None]
    return x[None]


def gradcam_pass(model, x, ids, att, layer, head):
    """One full forward + backward; returns GC [T-1, N] (ENC row dropped), like BITM:388-433."""
    saved = {}

    def hook(_module, _inputs, output):
        probs = output[1]
        probs.retain_grad()
        saved["attn"] = probs

    handle = model.text_encoder.encoder.layer[layer].crossattention.self.register_forward_hook(hook)
    model.requires_grad_(True)
    try:
        img = model.vision_model(pixel_values=x, interpolate_pos_encoding=True).last_hidden_state
        out = model.text_encoder(input_ids=ids, attention_mask=att, encoder_hidden_states=img,
                                 encoder_attention_mask=torch.ones(img.shape[:2], dtype=torch.long),
                                 output_attentions=True, return_dict=True)
        logits = model.itm_head(out.last_hidden_state[:, 0, :])
        loss = logits[:, 1].sum()
        model.zero_grad()
        loss.backward()
    finally:
        handle.remove()
        model.requires_grad_(False)
    a = saved["attn"][:, head, :, 1:].detach()
    g = saved["attn"].grad[:, head, :, 1:].clamp(min=0)
    gc = a * g * att[:, :, None]
    gc[gc < 0] = 0
    return gc[0, 1:]


def segment(model, tokenizer, rgb, classes, *, size, layer, head, drop_iter=4, save_len=10,
            thr=0.15, bg_mode="always", enc_id):
    ps = model.config.vision_config.patch_size
    grid = size // ps
    x = preprocess(rgb, size)
    caption = "a picture of " + " ".join(classes)
    enc = tokenizer([caption], padding="longest", truncation=True, max_length=500, return_tensors="pt")
    ids = enc["input_ids"].clone()
    ids[:, 0] = enc_id
    att = enc["attention_mask"]
    n_cls = len(classes)                      # one word-piece per class in these tests

    dropped = []
    gcps = []
    for d in range(drop_iter):
        xd = x.clone()
        for p in dropped:
            r, c = p // grid, p % grid
            xd[:, :, ps * r:ps * (r + 1), ps * c:ps * (c + 1)] = 0
        gc = gradcam_pass(model, xd, ids, att, layer, head)           # [T-1, N]
        gcp = gc.clone()
        gcp[:, dropped] = 0
        gcps.append(gcp)
        s = gc[3:-1].sum(0).numpy().copy()                            # class-token rows (batch of one)
        s[dropped] = 0
        dropped = dropped + [int(i) for i in np.argsort(s)[-save_len:]]
    agg = gcps[0] + sum(gcps)                                         # pass 0 counted twice
    S = agg[3:3 + n_cls].reshape(n_cls, grid, grid)

    h, w = rgb.shape[:2]
    P = []
    for c in range(n_cls):
        m = S[c]
        N = (m - m.min()) / (m.max() - m.min())
        K = N >= thr
        P.append(m * K)
    P = torch.stack(P)
    P = F.interpolate(P[None], size=(h, w), mode="bilinear", align_corners=True)[0].numpy()
    add_bg = bg_mode == "always" or (bg_mode == "if_few_classes" and n_cls < 3)
    if add_bg:
        bg = (P.max(0) == 0).astype(np.float32)
        P = np.concatenate([bg[None], P])
    G = []
    for k in range(P.shape[0]):
        g = gaussian_filter(P[k].astype(np.float32), sigma=0.05 * max(h, w))
        G.append((g - g.min()) / (g.max() - g.min()) if g.max() > g.min() else np.zeros_like(g))
    G = np.stack(G)
    labels_ch = crf(G, rgb)
    lut = np.array(([0] if add_bg else []) + [i + 1 for i in range(n_cls)])
    return S.numpy(), lut[labels_ch]


def crf(G, rgb):
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    probs = torch.softmax(torch.from_numpy(G), dim=0).numpy()
    n, h, w = probs.shape
    d = dcrf.DenseCRF2D(w, h, n)
    d.setUnaryEnergy(unary_from_softmax(probs))
    d.addPairwiseGaussian(sxy=3, compat=7)
    d.addPairwiseBilateral(sxy=50, srgb=5, rgbim=np.ascontiguousarray(rgb), compat=10)
    Q = np.array(d.inference(10)).reshape(n, h, w)
    return np.argmax(Q, axis=0)

"""PGSeg (GroupViT + non-learnable prototypical regularization): the engine's second, gradient-free method.

`PGSegSegmenter` has the same face as the PnP-OVSS `Segmenter`; `Segmenter.from_pretrained(..., method="pgseg")`
(or a GroupViT checkpoint) returns one."""

"""PGSeg (GroupViT + non-learnable prototypical regularization): the engine's second, gradient-free method.

`PGSegSegmenter` (segmenter.py) is a `Segmenter` (engine/segmenter.py), as PnP-OVSS's is;
`Segmenter.from_pretrained` on a GroupViT / PGSeg checkpoint (or with method="pgseg") returns one."""

"""Scoring segmentations: confusion matrices, mIoU under two protocols, dataset readers, `ovss-eval`."""

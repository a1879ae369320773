"""What both toy-world trainers (train.py: BLIP for PnP-OVSS, train_pgseg.py: GroupViT for PGSeg) use: the
warmup + cosine learning rate and the JSON-lines progress log. train.py's CLI hands `--method pgseg` to
train_pgseg, so train_pgseg takes these from here, not from train.py."""
from __future__ import annotations

import json
import math
import sys


def json_lines(logf, quiet: bool):
    """emit(record): one JSON line to the open log file (if any) and, unless quiet, to stderr."""
    def emit(rec: dict) -> None:
        line = json.dumps(rec)
        if logf:
            logf.write(line + "\n")
            logf.flush()
        if not quiet:
            print(line, file=sys.stderr, flush=True)
    return emit


def lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

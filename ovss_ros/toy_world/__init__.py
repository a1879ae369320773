"""The toy world: synthetic scenes with exact ground truth, and the tiny models trained on them.

`MODEL_DIR` is the embedded PnP-OVSS model (a tiny BLIP), `PGSEG_MODEL_DIR` the embedded PGSeg model (a tiny
GroupViT with NPR): models of this toy world only, not of real scenes.
"""
from pathlib import Path

MODEL_DIR = Path(__file__).resolve().parent.parent / "data" / "toy_blip"
PGSEG_MODEL_DIR = Path(__file__).resolve().parent.parent / "data" / "toy_pgseg"
MODEL_DIRS = {"pnp_ovss": MODEL_DIR, "pgseg": PGSEG_MODEL_DIR}

"""The toy world: synthetic scenes with exact ground truth, and the tiny BLIP trained on them.

`MODEL_DIR` is the embedded model (a model of this toy world only, not of real scenes).
"""
from pathlib import Path

MODEL_DIR = Path(__file__).resolve().parent.parent / "data" / "toy_blip"

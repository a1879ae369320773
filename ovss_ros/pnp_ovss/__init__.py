"""PnP-OVSS (Luo et al., "Emergent Open-Vocabulary Semantic Segmentation from Off-the-shelf Vision-Language
Models", CVPR 2024) on a BLIP image-text matching model, one file per step of the paper:
class_presence.py (which classes the image-text match says are there), gradcam.py (GradCAM of the match score
on the text encoder's cross-attention), salience_dropout.py (hide the most salient patches, run again,
accumulate), postprocess.py (threshold, Gaussian blur, DenseCRF), driven per batch by frame_batch.py over the
text prepared once per vocabulary (prompts.py, text_cache.py, text_pass.py). segmenter.py puts it behind the
engine's face; config.py holds its settings and presets."""

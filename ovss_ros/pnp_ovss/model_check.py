"""What a checkpoint accepts, known from its config and tokenizer alone (no weights loaded).

The Segmenter uses it for every check, and the ROS node holds one from configure on, so engine settings
and vocabularies are refused with the same reasons whether the model's weights are loaded or not."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

from ..engine.config import check_vision_dtype
from ..engine.loading import dtype_name, hub_errors, resolve_dtype_name
from ..engine.methods import check_method
from ..engine.vocabulary import normalize_vocabulary, refuse_same_tokens
from .config import SegmenterConfig
from .prompts import PromptBatch, build_prompts, enc_token_id


class ModelCheck:
    def __init__(self, model_config, tokenizer, name: str = "", weights_dtype: str = "float32") -> None:
        self.model_config = model_config      # transformers BlipConfig
        self.tokenizer = tokenizer
        self.name = name
        self.weights_dtype = weights_dtype    # what the weights are (or will be) loaded as: limits vision_dtype
        text = model_config.text_config
        self.text_layers = int(text.num_hidden_layers)
        self.heads = int(text.num_attention_heads)
        self.max_tokens = int(text.max_position_embeddings)
        self.patch_size = int(model_config.vision_config.patch_size)
        self.native_image_size = int(model_config.vision_config.image_size)
        self.enc_id = enc_token_id(tokenizer, text.vocab_size)

    @classmethod
    def from_loaded(cls, loaded) -> "ModelCheck":
        return cls(loaded.model.config, loaded.tokenizer, loaded.name,
                   dtype_name(next(loaded.model.parameters()).dtype))

    @classmethod
    def from_pretrained(cls, model: Union[str, Path], local_files_only: Optional[bool] = None,
                        revision: Optional[str] = None, dtype: str = "float32") -> "ModelCheck":
        """Config and tokenizer of a Hub id or local checkpoint: seconds, where the weights take minutes.
        A checkpoint that is not BLIP (e.g. GroupViT) is one ModelLoadError naming both kinds. `dtype`: what
        the weights will be loaded as."""
        from transformers import AutoConfig, AutoTokenizer

        name, weights = str(model), resolve_dtype_name(dtype)
        with hub_errors(name, local_files_only) as offline:
            # AutoConfig, not BlipConfig: BlipConfig reads any config.json and would take a GroupViT silently
            config = AutoConfig.from_pretrained(name, local_files_only=offline, revision=revision)
            check_method(config.model_type, "pnp_ovss", name)
            tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=offline, revision=revision)
        return cls(config, tokenizer, name, weights)

    # -- settings -----------------------------------------------------------------------------------
    def layers(self, layer: Union[int, str]) -> list[int]:
        if layer == "all":
            return list(range(self.text_layers))
        if not 0 <= int(layer) < self.text_layers:
            raise ValueError(f"gradcam_layer={layer} but the text encoder has {self.text_layers} layers "
                             f"(0..{self.text_layers - 1})")
        return [int(layer)]

    def check_config(self, cfg: SegmenterConfig) -> SegmenterConfig:
        """The settings if this model can run them; ValueError with the reason otherwise."""
        cfg.validate()
        check_vision_dtype(cfg.vision_dtype, self.weights_dtype)
        self.layers(cfg.gradcam_layer)
        if cfg.gradcam_head != "mean" and not 0 <= int(cfg.gradcam_head) < self.heads:
            raise ValueError(f"gradcam_head={cfg.gradcam_head} but the cross-attention has {self.heads} heads "
                             f"(0..{self.heads - 1})")
        size = cfg.image_size or self.native_image_size
        if size % self.patch_size:
            raise ValueError(f"image_size={size} is not a multiple of the patch size {self.patch_size}")
        return cfg

    # -- vocabulary ---------------------------------------------------------------------------------
    def prompts(self, classes: Sequence[str], cfg: SegmenterConfig) -> tuple[tuple, PromptBatch]:
        """Checked class names and their per-class captions (class presence, per_class GradCAM). Raises
        VocabularyError naming the problem: empty, duplicate (also as the tokenizer reads them) or over-long names, words the tokenizer does
        not know, captions longer than the text model takes."""
        names = normalize_vocabulary(classes, cfg.max_classes, cfg.max_class_name_length)
        presence = build_prompts(self.tokenizer, names, cfg.prompt_template, per_class=True,
                                 first_rows=cfg.gradcam_rows == "first_token", enc_id=self.enc_id,
                                 max_length=self.max_tokens)
        # class-word tokens in each class's own caption: what the model reads for that class
        refuse_same_tokens(names, [presence.input_ids[presence.class_caption[c], presence.class_rows[c]].tolist()
                                   for c in range(len(names))])
        if cfg.prompt_mode == "single":   # fail now, not on the first frame, if the full caption is unusable
            self.single_caption(names, cfg)
        return names, presence

    def single_caption(self, names: Sequence[str], cfg: SegmenterConfig) -> PromptBatch:
        """One caption naming `names` (prompt_mode single)."""
        return build_prompts(self.tokenizer, names, cfg.prompt_template, False, False, self.enc_id,
                             self.max_tokens)

    def check_vocabulary(self, classes: Sequence[str], cfg: SegmenterConfig) -> tuple:
        return self.prompts(classes, cfg)[0]

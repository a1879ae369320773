"""BLIP prompts for a vocabulary: the caption(s) and which token rows belong to which class."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..engine.vocabulary import VocabularyError


def enc_token_id(tokenizer, text_vocab_size: int) -> int:
    """[ENC] replaces [CLS] for image-grounded text encoding (BLIP). HF does not do it for us."""
    tid = tokenizer.convert_tokens_to_ids("[ENC]")
    if tid is not None and tid != tokenizer.unk_token_id:
        return int(tid)
    # BLIP appends [DEC], [ENC] to BERT's vocabulary, so [ENC] is the last embedding row (30523).
    return int(text_vocab_size) - 1


@dataclass
class PromptBatch:
    """Tokenized captions plus, per class, the caption and token rows that make its GradCAM map."""

    input_ids: torch.Tensor          # [B, T], [ENC] at position 0
    attention_mask: torch.Tensor     # [B, T]
    class_caption: list[int]         # caption index of each class
    class_rows: list[list[int]]      # class-word token rows of each class
    first_rows: bool = False         # use row 0 ([ENC]) of the class's caption instead

    def rows_of(self, c: int) -> list[int]:
        return [0] if self.first_rows else self.class_rows[c]

    def to(self, device) -> "PromptBatch":
        return PromptBatch(self.input_ids.to(device), self.attention_mask.to(device),
                           self.class_caption, self.class_rows, self.first_rows)


def _tokenize(tokenizer, texts: list[str], enc_id: int):
    # no truncation: a caption the text model cannot take is refused by name (build_prompts), not cut
    enc = tokenizer(texts, padding="longest", truncation=False, return_offsets_mapping=True,
                    return_tensors="pt")
    ids = enc["input_ids"].clone()
    ids[:, 0] = enc_id
    return ids, enc["attention_mask"], enc["offset_mapping"]


def _rows_in_span(offsets: torch.Tensor, start: int, end: int) -> list[int]:
    return [t for t, (a, b) in enumerate(offsets.tolist()) if b > a and a >= start and b <= end]


def _check_length(names, texts, mask: torch.Tensor, per_class: bool, max_length: int) -> None:
    lengths = mask.sum(dim=1).tolist()
    worst = max(range(len(texts)), key=lambda i: lengths[i])
    if lengths[worst] <= max_length:
        return
    what = (f"the caption of class {names[worst]!r}" if per_class
            else f"the one caption naming all {len(names)} classes (prompt_mode=single)")
    fix = "use a shorter class name" if per_class else "use fewer or shorter class names, or prompt_mode=per_class"
    raise VocabularyError(f"{what} has {lengths[worst]} tokens but the text model takes at most {max_length} "
                          f"(max_position_embeddings): {fix}")


def _unknown_words(tokenizer, text: str, ids: torch.Tensor, offsets: torch.Tensor, rows: list[int]) -> list[str]:
    unk = tokenizer.unk_token_id
    return [text[int(offsets[r, 0]):int(offsets[r, 1])] for r in rows if unk is not None and int(ids[r]) == unk]


def build_prompts(tokenizer, names: Sequence[str], template: str, per_class: bool, first_rows: bool,
                  enc_id: int, max_length: int = 512) -> PromptBatch:
    """One caption naming every class ("a picture of c1 c2 ...") or one caption per class.

    Refuses (VocabularyError) a caption longer than `max_length` tokens (the text model's position limit)
    and class names with words the tokenizer does not know: those become [UNK], which the ITM head
    matches with confidence (a "plain [UNK]" class scored presence 0.989 on the toy model).
    """
    prefix, suffix = template.split("{}", 1)
    if per_class:
        texts = [template.format(n) for n in names]
        spans = [(i, len(prefix), len(prefix) + len(n)) for i, n in enumerate(names)]
    else:
        texts, spans, pos = [prefix], [], len(prefix)
        for i, n in enumerate(names):
            spans.append((0, pos, pos + len(n)))
            pos += len(n) + 1
        texts = [prefix + " ".join(names) + suffix]
    ids, mask, offsets = _tokenize(tokenizer, texts, enc_id)
    _check_length(names, texts, mask, per_class, max_length)
    class_caption, class_rows = [], []
    for name, (cap, start, end) in zip(names, spans):
        rows = _rows_in_span(offsets[cap], start, end)
        if not rows:
            raise VocabularyError(f"class name {name!r} produced no tokens")
        unknown = _unknown_words(tokenizer, texts[cap], ids[cap], offsets[cap], rows)
        if unknown:
            raise VocabularyError(f"class name {name!r}: the model's tokenizer does not know "
                                  f"{', '.join(repr(w) for w in unknown)} (it would be read as [UNK], "
                                  "which matches almost anything); use words the model knows")
        class_caption.append(cap)
        class_rows.append(rows)
    return PromptBatch(ids, mask, class_caption, class_rows, first_rows)

"""Class names as both methods take them: normalised, checked, and refused with one reason."""
from __future__ import annotations

import unicodedata
from typing import Sequence


class VocabularyError(ValueError):
    """The vocabulary cannot be used; the message says why."""


def _invisible(ch: str) -> bool:
    # format characters (Cf): zero-width space/joiners, BOM, soft hyphen, bidi marks; tokenizers drop them
    return unicodedata.category(ch) == "Cf"


def normalize_name(raw: str) -> str:
    """One class name as the engine uses it: Unicode NFKC, invisible (format) characters removed, whitespace
    (any kind, control whitespace included) collapsed to single spaces. Other control characters stay, so
    that normalize_vocabulary can refuse them by name."""
    text = "".join(ch for ch in unicodedata.normalize("NFKC", raw) if not _invisible(ch))
    return " ".join(text.split())


def normalize_vocabulary(classes: Sequence[str], max_classes: int, max_name_length: int) -> tuple[str, ...]:
    """Normalise (normalize_name) and check class names; duplicates (after normalisation, case ignored),
    empty or over-long names and control characters are errors, not silent fixes. The checkers add one
    duplicate check per model: names its tokenizer reads as the same tokens (refuse_same_tokens)."""
    if isinstance(classes, str):
        raise VocabularyError("vocabulary must be a list of class names, not one string")
    names, written = [], {}
    for raw in classes:
        if not isinstance(raw, str):
            raise VocabularyError(f"class name {raw!r} is not a string")
        name = normalize_name(raw)
        if not name:
            raise VocabularyError("empty class name in vocabulary")
        if len(name) > max_name_length:
            raise VocabularyError(f"class name {name[:20]!r}... has {len(name)} characters "
                                  f"(max_class_name_length={max_name_length})")
        if any(unicodedata.category(ch) == "Cc" for ch in name):
            raise VocabularyError(f"class name {name!r} contains control characters")
        names.append(name)
        if " ".join(raw.split()) != name:   # more than spacing changed: say what was written
            written[len(names) - 1] = raw
    if not names:
        raise VocabularyError("vocabulary is empty")
    if len(names) > max_classes:
        raise VocabularyError(f"vocabulary has {len(names)} classes (max_classes={max_classes})")
    seen: dict[str, str] = {}
    for i, name in enumerate(names):
        key = name.casefold()
        if key in seen:
            how = f"written {written[i]!r}; " if i in written else ""
            raise VocabularyError(f"duplicate class name {name!r} ({how}same as {seen[key]!r})")
        seen[key] = name
    return tuple(names)


def refuse_same_tokens(names: Sequence[str], token_ids: Sequence[Sequence[int]]) -> None:
    """Two names the model's tokenizer turns into the same token ids are one class to the model (e.g. accents
    or punctuation it drops): refused as duplicates, in normalize_vocabulary's words."""
    seen: dict[tuple, str] = {}
    for name, ids in zip(names, token_ids):
        key = tuple(int(i) for i in ids)
        if key in seen:
            raise VocabularyError(f"duplicate class name {name!r} (same as {seen[key]!r} for the model's "
                                  "tokenizer)")
        seen[key] = name

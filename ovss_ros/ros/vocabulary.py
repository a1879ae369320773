"""Vocabulary text from the `vocabulary` topic -> class names, and the versioned vocabulary state."""
from __future__ import annotations

import json
import re


class VocabularyTextError(ValueError):
    pass


def parse_vocabulary_text(text: str) -> list[str]:
    """A JSON list of strings (`["red car", "dog"]`) or names separated by commas, semicolons or new lines
    (`red car, dog`). Empty items between separators are ignored; an empty result is left to the engine's
    check, so every source reports the same reason."""
    text = text.strip()
    if text.startswith("["):
        try:
            names = json.loads(text)
        except json.JSONDecodeError as exc:
            raise VocabularyTextError(f"vocabulary looks like JSON but does not parse: {exc}") from None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise VocabularyTextError("a JSON vocabulary must be a list of strings")
        return names
    return [n for n in (p.strip() for p in re.split(r"[,;\n]", text)) if n]


def vocabulary_names(value) -> list[str]:
    """The `vocabulary` parameter: a string array (blank entries ignored, so [""] = none) or one string
    in the topic's format. Anything else is a TypeError."""
    if isinstance(value, str):
        return parse_vocabulary_text(value)
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return [v for v in value if v.strip()]
    if value is None:
        return []
    raise TypeError(f"expected a list of class names or one comma-separated string, got {value!r}")

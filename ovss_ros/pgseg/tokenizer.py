"""CLIP's byte-level BPE tokenizer (what GroupViT and PGSeg use), built from a merges list.

The authors ship OpenAI CLIP's `bpe_simple_vocab_16e6.txt.gz`; transformers' CLIPTokenizer wants the same BPE as
`vocab.json` + `merges.txt`. The vocabulary follows from the merges exactly as CLIP builds it: the 256 byte
symbols, the same with the end-of-word mark, one entry per merge, then <|startoftext|> and <|endoftext|>."""
from __future__ import annotations

import gzip
from pathlib import Path
from typing import Iterable, Sequence

CLIP_MERGES = 49152 - 256 - 2          # CLIP keeps this many merges of the file (vocabulary 49408)
SOT, EOT = "<|startoftext|>", "<|endoftext|>"


def bytes_to_unicode() -> dict[int, str]:
    """CLIP/GPT-2's reversible map from bytes to printable characters."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def read_bpe_file(path: Path, limit: int = CLIP_MERGES) -> list[tuple[str, str]]:
    """Merges of a CLIP BPE file (.txt or .txt.gz): the first line is a header."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")[1:limit + 1]
    return [tuple(line.split()) for line in lines if line.strip()]


def write_tokenizer(merges: Sequence[tuple[str, str]], out_dir: Path, context_length: int = 77):
    """A CLIPTokenizer (tokenizer.json and friends) for `merges`, saved in `out_dir`; returns it."""
    from transformers import CLIPTokenizer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [SOT, EOT]
    # vocab/merges passed as objects: transformers 5 ignores vocab_file= arguments without a word
    tok = CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=[tuple(m) for m in merges],
                        model_max_length=context_length)
    tok.save_pretrained(out_dir)
    return tok


def word_merges(words: Iterable[str]) -> list[tuple[str, str]]:
    """Merges that spell each word left to right (a small BPE for toy vocabularies: every listed word becomes
    one token, anything else falls back to smaller pieces as in any BPE)."""
    out: list[tuple[str, str]] = []
    seen = set()
    for word in words:
        for w in word.lower().split():
            chars = list(w[:-1]) + [w[-1] + "</w>"]
            piece = chars[0]
            for ch in chars[1:]:
                if (piece, ch) not in seen:
                    seen.add((piece, ch))
                    out.append((piece, ch))
                piece += ch
    return out

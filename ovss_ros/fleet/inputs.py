"""INPUTS of ovss-label-bags -> the bags to label: bag directories (metadata.yaml), bare .mcap/.db3 files,
globs of either, and folders searched for them."""
from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

STORAGE_SUFFIXES = (".mcap", ".db3")


@dataclass
class BagInput:
    name: str              # output name under --out
    path: Path
    error: str = ""        # why it cannot be labelled (reported as a failed bag, the others go on)


def _is_bag_dir(p: Path) -> bool:
    return p.is_dir() and (p / "metadata.yaml").is_file()


def _bag_of(p: Path) -> Optional[Path]:
    """The bag a path names: its directory for metadata.yaml or a storage file inside a bag directory (a
    split bag is read whole), the file itself for a bare .mcap/.db3."""
    if _is_bag_dir(p):
        return p
    if p.is_file() and (p.name == "metadata.yaml" or p.suffix in STORAGE_SUFFIXES) and _is_bag_dir(p.parent):
        return p.parent
    if p.is_file() and p.suffix in STORAGE_SUFFIXES:
        return p
    return None


def _search(folder: Path, exclude: Optional[Path]) -> list[Path]:
    """Bags under a folder that is not a bag itself, sorted; never inside `exclude` (the output folder)."""
    found: list[Path] = []
    for p in sorted(folder.iterdir()):
        if exclude is not None and p.resolve() == exclude:
            continue
        bag = _bag_of(p)
        if bag is not None:
            found.append(bag)
        elif p.is_dir():
            found.extend(_search(p, exclude))
    return found


def find_bags(inputs: Iterable[str], exclude: Optional[Path] = None) -> list[BagInput]:
    """Every bag the inputs name, once each, in the order given. An input that names no bag becomes an entry
    with an error instead of stopping the run."""
    exclude = exclude.resolve() if exclude is not None else None
    seen, bags = set(), []
    for text in inputs:
        paths = [Path(p) for p in sorted(glob.glob(text, recursive=True))] if glob.has_magic(text) else [Path(text)]
        found: list[Path] = []
        for p in paths:
            bag = _bag_of(p)
            found.extend([bag] if bag is not None else _search(p, exclude) if p.is_dir() else [])
        if not found:
            bags.append(BagInput(Path(text).stem or text, Path(text), f"{text}: no rosbag2 directory, .mcap or .db3 "
                                 "file there" if paths else f"{text}: no such file or directory"))
        for bag in found:
            if bag.resolve() not in seen:
                seen.add(bag.resolve())
                bags.append(BagInput(bag.stem if bag.is_file() else bag.name, bag))
    return bags


def duplicate_names(bags: list[BagInput]) -> dict[str, list[str]]:
    """Output names claimed by more than one bag (two folders' `rosbag2_...` of the same name)."""
    by_name: dict[str, list[str]] = {}
    for b in bags:
        by_name.setdefault(b.name, []).append(str(b.path))
    return {k: v for k, v in by_name.items() if len(v) > 1}

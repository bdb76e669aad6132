"""The user docs stay true to the tree: the README is short and opens with the two commands, every bundled model
folder has a card, and every model folder or relative link named in README.md, docs/ and the cards exists."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL_DIRS = sorted(p.parent for p in (ROOT / "models").glob("*/model.safetensors"))
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), *sorted((ROOT / "models").rglob("README.md"))]
MODEL_PATH = re.compile(r"models/([A-Za-z0-9_.-]+)")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_readme_is_short_and_opens_with_make_run_and_make_test() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250, len(lines)
    assert lines[0].split()[:2] == ["make", "run"] and lines[1].split()[:2] == ["make", "test"]


def test_every_bundled_model_folder_has_a_card_with_commands_scores_and_limits() -> None:
    assert len(MODEL_DIRS) >= 5
    for folder in MODEL_DIRS:
        card = folder / "README.md"
        assert card.is_file(), f"{folder.name}: no README.md card"
        text = card.read_text()
        for needed in ("## Data", "## How it was trained", "## Scores", "## Limits", "transduce evaluate"):
            assert needed in text, f"{card}: missing {needed!r}"


def test_named_model_folders_and_relative_links_exist() -> None:
    for page in PAGES:
        text = page.read_text()
        for name in MODEL_PATH.findall(text):
            name = name.rstrip(".")
            if name.endswith((".py", ".yaml")) or name in {"ctc", "folder", "ngram", "rnn", "transformer"}:
                continue  # transduce/models/*.py, not a bundled folder
            assert (ROOT / "models" / name).is_dir(), f"{page.relative_to(ROOT)}: names missing folder models/{name}"
        for target in LINK.findall(text):
            if "://" not in target:
                assert (page.parent / target).exists(), f"{page.relative_to(ROOT)}: broken link {target}"


def test_readme_headline_scores_are_the_cards() -> None:
    readme = (ROOT / "README.md").read_text()
    for name in ("multi30k-en-de", "multi30k-en-de-best"):
        card = json.loads((ROOT / "models" / name / "card.json").read_text())
        test = card["test_2016_flickr"]
        assert f"BLEU {test['bleu_tok_lc']:.2f} ({test['bleu']:.2f})" in readme, name

"""Corpus BLEU and chrF through sacreBLEU, and the multimodal-MT tokenized convention."""

from __future__ import annotations

from functools import lru_cache

import sacrebleu
from sacremoses import MosesPunctNormalizer, MosesTokenizer


def sacre_scores(hyps: list[str], refs: list[str]) -> dict[str, float | str]:
    """Detokenized sacreBLEU BLEU and chrF with their signatures."""
    bleu = sacrebleu.metrics.BLEU()
    chrf = sacrebleu.metrics.CHRF()
    b = bleu.corpus_score(hyps, [refs])
    c = chrf.corpus_score(hyps, [refs])
    return {
        "bleu": round(b.score, 2), "bleu_signature": str(bleu.get_signature()),
        "chrf": round(c.score, 2), "chrf_signature": str(chrf.get_signature()),
    }


@lru_cache(maxsize=8)
def _moses(lang: str) -> tuple[MosesPunctNormalizer, MosesTokenizer]:
    return MosesPunctNormalizer(lang=lang), MosesTokenizer(lang=lang)


def mmt_tokenize(line: str, lang: str) -> str:
    """Lowercase, Moses punctuation normalization, Moses tokenization (with escaping), as the
    official Multi30k ``*.lc.norm.tok.*`` files were made."""
    norm, tok = _moses(lang)
    return tok.tokenize(norm.normalize(line.lower()), return_str=True, escape=True)


def tokenized_bleu(hyps: list[str], refs_tok: list[str], lang: str) -> float:
    """BLEU on Moses tokens of lowercased output against already-tokenized references."""
    hyp_tok = [mmt_tokenize(h, lang) for h in hyps]
    score = sacrebleu.corpus_bleu(hyp_tok, [refs_tok], tokenize="none", force=True)
    return round(score.score, 2)

"""Metrics: BLEU/chrF through sacreBLEU, tokenized-lowercased BLEU (multimodal-MT convention)."""

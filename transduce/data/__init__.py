"""Data: text and parallel corpora, tokenizers, batching, dataset recipes."""

"""Streaming recognition: chunk-by-chunk search, endpointing and voice activity detection."""

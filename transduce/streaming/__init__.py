"""Streaming recognition: stream sessions (one stream, or many batched through the encoder), endpointing and
voice activity detection."""

"""Pad-token set-up shared by training and the local teacher backend."""

from __future__ import annotations


def ensure_pad_token(tokenizer):
    """Give a tokenizer without a pad token its end-of-sequence token as one (batching needs a pad id)."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer

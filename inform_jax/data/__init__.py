"""Preference and prompt data: file loaders, tokenization, and the synthetic RLHF world."""

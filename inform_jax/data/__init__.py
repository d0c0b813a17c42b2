"""Preference and prompt data: file loaders, formats, tokenization, tokenizer loading."""

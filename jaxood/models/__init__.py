"""CLIP towers, Hugging Face weight conversion and the tokenizer."""

"""Integrations with other libraries: `entflash.integrations.transformers` (Hugging Face, extra [hf])."""

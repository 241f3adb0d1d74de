"""zhllama stage: vocab."""

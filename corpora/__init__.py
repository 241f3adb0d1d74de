"""zhllama stage: corpora."""

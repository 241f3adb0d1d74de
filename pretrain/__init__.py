"""zhllama stage: pretrain."""

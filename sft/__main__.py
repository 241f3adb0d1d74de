"""``python -m sft COMMAND``: supervised chat fine-tuning in the Llama-2 chat format, and using the result."""
import sys

from zhllama.cli import main

COMMANDS = {
    "train": ("sft.train:SftTrainConfig", "sft.train:run", "supervised fine-tuning on chat data (DeepSpeed, full or LoRA)"),
    "chat": ("sft.chat:ChatConfig", "sft.chat:run", "interactive multi-turn chat with a model, streamed"),
    "generate": ("sft.generate:GenerateConfig", "sft.generate:run", "answer every conversation of a JSONL file"),
    "eval": ("sft.evaluate:SftEvalConfig", "sft.evaluate:run", "loss and bits/char on held-out assistant tokens"),
}

if __name__ == "__main__":
    sys.exit(main("sft", COMMANDS))

"""``python -m pretrain COMMAND``: stand-in model, embedding resize/init, packing, training, eval."""
import sys

from zhllama.cli import main

COMMANDS = {
    "standin": ("pretrain.standin:StandinConfig", "pretrain.standin:run", "train the small stand-in base Llama (cached)"),
    "init": ("pretrain.embeddings:InitConfig", "pretrain.embeddings:run", "resize embeddings to a merged tokenizer, init new rows"),
    "pack": ("pretrain.data:PackCommandConfig", "pretrain.data:run", "tokenize + pack corpus into cached blocks"),
    "train": ("pretrain.train:TrainConfig", "pretrain.train:run", "continued pretraining with DeepSpeed (launches workers)"),
    "eval": ("pretrain.evaluate:EvalConfig", "pretrain.evaluate:run", "token PPL, bits/char, bits/byte (compare models)"),
}

if __name__ == "__main__":
    sys.exit(main("pretrain", COMMANDS))

"""``python -m vocab COMMAND``: train a Chinese BPE, merge it into Llama-2's tokenizer, report."""
import sys

from zhllama.cli import main

COMMANDS = {
    "train": ("vocab.train:TrainConfig", "vocab.train:run", "corpus shards -> Chinese SentencePiece BPE model"),
    "merge": ("vocab.merge:MergeConfig", "vocab.merge:run", "base + Chinese model -> merged tokenizer dir + report"),
    "report": ("vocab.report:ReportConfig", "vocab.report:run", "compare tokenizers on texts (JSON, Markdown, PNG)"),
}

if __name__ == "__main__":
    sys.exit(main("vocab", COMMANDS))

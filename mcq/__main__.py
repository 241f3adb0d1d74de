"""``python -m mcq COMMAND``: multiple-choice knowledge benchmarks (C-Eval / CMMLU / AGIEval-gaokao)."""
import sys

from zhllama.cli import main

COMMANDS = {
    "score": ("mcq.cli:ScoreConfig", "mcq.cli:run_score", "accuracy of one model on a C-Eval/CMMLU dir or a JSONL file"),
    "compare": ("mcq.cli:CompareConfig", "mcq.cli:run_compare", "several models on the same questions, side by side"),
}

if __name__ == "__main__":
    sys.exit(main("mcq", COMMANDS))

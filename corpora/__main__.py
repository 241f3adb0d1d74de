"""``python -m corpora COMMAND``: read, clean, deduplicate and shard Chinese corpora."""
import sys

from zhllama.cli import main

COMMANDS = {
    "build": ("corpora.build:BuildConfig", "corpora.build:run", "sources -> clean shards + manifest.json"),
}

if __name__ == "__main__":
    sys.exit(main("corpora", COMMANDS))

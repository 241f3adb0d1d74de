# zhllama: each target is a thin wrapper over a stage CLI (`python -m corpora|vocab|pretrain|sft ...`).
# Override any variable: `make vocab DATA_DIR=/data/zh ART=/scratch/art`.
SHELL := /bin/bash
PYTHON_BOOT ?= python3
VENV ?= .venv
PY ?= $(VENV)/bin/python
DATA_DIR ?= ../shared/data
ART ?= artifacts
RUN ?= demo
# Worker processes for `make pretrain` (empty: the config's launch.nproc, 2 in configs/pretrain/train.yaml).
NPROC ?=
# Per-stage configs (typed YAML; `--key value` overrides go in ARGS, after the Makefile's own
# arguments: the last value of a key wins, so ARGS="--out_dir X" overrides the Makefile's --out_dir).
CORPUS_CONFIG ?= configs/corpora/build.yaml
VOCAB_CONFIG ?= configs/vocab/train.yaml
MERGE_CONFIG ?= configs/vocab/merge.yaml
STANDIN_CONFIG ?= configs/pretrain/standin.yaml
INIT_CONFIG ?= configs/pretrain/init.yaml
PACK_CONFIG ?= configs/pretrain/pack.yaml
PRETRAIN_CONFIG ?= configs/pretrain/train.yaml
EVAL_CONFIG ?= configs/pretrain/eval.yaml
REWARD_CONFIG ?= configs/align/reward.yaml
DPO_CONFIG ?= configs/align/dpo.yaml
RL_CONFIG ?= configs/align/rl.yaml
COMPARE_CONFIG ?= configs/align/compare.yaml
ARGS ?=
# Extra overrides for the corpus command only; the demo reads a capped subset of every source
# (all domains and both scripts, ~1.9 M characters) so it stays a few minutes on 2 cores.
CORPUS_ARGS ?=
DEMO_CORPUS_ARGS ?= --max_chars_per_source 80000
# The demo's chat models are 8.6M-parameter stand-ins after 30 SFT steps: greedy decoding picks '▁'
# then EOS (every Llama-2 answer ends '▁</s>'), so the demo samples at temperature 1 (seeded).
DEMO_SAMPLING ?= --generation.do_sample true --generation.temperature 1.0 --generation.top_p 1.0
# `make pretrain` also runs the standin and init steps: ARGS goes to the train command only, these to the steps.
STANDIN_ARGS ?=
INIT_ARGS ?=
# More overrides for the train command (after ARGS).
TRAIN_ARGS ?=
MODEL ?= $(ART)/pretrain/$(RUN)/final
BASELINE ?=
# Chat fine-tuning: `make sft` trains on top of SFT_BASE; `make chat` talks to CHAT_MODEL.
SFT_CONFIG ?= configs/sft/train.yaml
SFT_BASE ?= $(ART)/pretrain/$(RUN)/final
SFT_ARGS ?=
CHAT_MODEL ?= $(ART)/sft/$(RUN)/final
EVAL_FILES ?= $(ART)/corpus/heldout/heldout.jsonl
# Multiple-choice benchmark: a C-Eval/CMMLU dir or a JSONL file; SHOTS/SUBJECTS empty = the config's.
BENCHMARK ?= $(DATA_DIR)/sft/bench_agieval_gaokao_zh.jsonl
BENCHMARK_CONFIG ?= configs/mcq/score.yaml
SHOTS ?=
SUBJECTS ?=
# The alignment stages start from the SFT model (`make sft`).
SFT_MODEL ?= $(ART)/sft/$(RUN)/final
export DS_ACCELERATOR ?= $(if $(shell command -v nvidia-smi 2>/dev/null),,cpu)
export OMP_NUM_THREADS ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup corpus vocab merge-tokenizer standin init pack pretrain eval benchmark sft chat reward dpo rl compare demo test bench lint clean help

help:
	@grep -E '^[a-z-]+:.*## ' Makefile | sed 's/:.*## /\t/'

setup: $(VENV)/.installed ## create .venv (CPU torch first, then the project with pinned versions)

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first: an unpinned torch would pull a multi-GB CUDA build on a CPU machine.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

corpus: setup ## read, clean, dedup and shard the corpora -> $(ART)/corpus
	$(PY) -m corpora build --config $(CORPUS_CONFIG) --data_dir $(DATA_DIR) --out_dir $(ART)/corpus $(CORPUS_ARGS) $(ARGS)

vocab: setup ## train the Chinese SentencePiece BPE -> $(ART)/vocab/zh_bpe.model
	$(PY) -m vocab train --config $(VOCAB_CONFIG) --corpus_dir $(ART)/corpus --out_dir $(ART)/vocab $(ARGS)

merge-tokenizer: setup ## merge into Llama-2's 32k tokenizer -> $(ART)/tokenizer (+ per-domain report)
	ZHLLAMA_DATA_DIR=$(abspath $(DATA_DIR)) $(PY) -m vocab merge --config $(MERGE_CONFIG) \
	  --zh_model $(ART)/vocab/zh_bpe.model --corpus_dir $(ART)/corpus --out_dir $(ART)/tokenizer $(ARGS)

standin: setup ## train (once, cached) the small stand-in base Llama on the 32k tokenizer -> $(ART)/standin
	$(PY) -m pretrain standin --config $(STANDIN_CONFIG) --tokenizer_model $(DATA_DIR)/llama2_tokenizer.model \
	  --corpus_dir $(ART)/corpus --out_dir $(ART)/standin $(ARGS)

init: setup ## resize embeddings to the merged tokenizer and initialise new rows -> $(ART)/pretrain/$(RUN)/init
	$(PY) -m pretrain init --config $(INIT_CONFIG) --model_dir $(ART)/standin --tokenizer_dir $(ART)/tokenizer \
	  --out_dir $(ART)/pretrain/$(RUN)/init $(ARGS)

pack: setup ## tokenize + pack the corpus into cached blocks -> $(ART)/cache/<key>
	$(PY) -m pretrain pack --config $(PACK_CONFIG) --tokenizer_dir $(ART)/tokenizer --corpus_dir $(ART)/corpus \
	  --cache_dir $(ART)/cache $(ARGS)

pretrain: setup ## standin + init, then continued pretraining with DeepSpeed -> $(ART)/pretrain/$(RUN)/final
	$(MAKE) --no-print-directory standin ARGS="$(STANDIN_ARGS)"
	$(MAKE) --no-print-directory init ARGS="$(INIT_ARGS)"
	$(PY) -m pretrain train --config $(PRETRAIN_CONFIG) --model_dir $(ART)/pretrain/$(RUN)/init \
	  --tokenizer_dir $(ART)/tokenizer --corpus_dir $(ART)/corpus --cache_dir $(ART)/cache \
	  --run_dir $(ART)/pretrain/$(RUN) $(if $(NPROC),--nproc $(NPROC)) $(ARGS) $(TRAIN_ARGS)

eval: setup ## perplexity, bits/char, bits/byte of MODEL on EVAL_FILES (vs BASELINE) -> $(ART)/eval
	$(PY) -m pretrain eval --config $(EVAL_CONFIG) --model $(MODEL) $(addprefix --files ,$(EVAL_FILES)) \
	  $(if $(BASELINE),--baseline $(BASELINE)) --out_dir $(ART)/eval $(ARGS)

benchmark: setup ## multiple-choice accuracy of MODEL (vs BASELINE="dirs") on BENCHMARK -> $(ART)/benchmark
	$(PY) -m mcq $(if $(BASELINE),compare --models $(MODEL) $(addprefix --models ,$(BASELINE)),score --model $(MODEL)) \
	  --config $(BENCHMARK_CONFIG) --benchmark $(BENCHMARK) $(if $(SHOTS),--shots $(SHOTS)) \
	  $(addprefix --subjects ,$(SUBJECTS)) --out_dir $(ART)/benchmark $(ARGS)

sft: setup ## supervised chat fine-tuning of SFT_BASE (Llama-2 chat format, DeepSpeed) -> $(ART)/sft/$(RUN)/final
	$(PY) -m sft train --config $(SFT_CONFIG) --model_dir $(SFT_BASE) --tokenizer_dir $(ART)/tokenizer \
	  --data.train_files $(DATA_DIR)/sft/sft_train.jsonl --data.eval_files $(DATA_DIR)/sft/sft_heldout.jsonl \
	  --run_dir $(ART)/sft/$(RUN) $(if $(NPROC),--nproc $(NPROC)) $(ARGS) $(SFT_ARGS)

chat: setup ## talk to CHAT_MODEL in the terminal (multi-turn, streamed; ARGS="--system '...'")
	$(PY) -m sft chat --config configs/sft/chat.yaml --model $(CHAT_MODEL) $(ARGS)
reward: setup ## reward model on preference pairs (DeepSpeed) -> $(ART)/align/reward/final (+ held-out report)
	$(PY) -m align reward --config $(REWARD_CONFIG) --model_dir $(SFT_MODEL) --tokenizer_dir $(SFT_MODEL) \
	  --data.train_files $(DATA_DIR)/sft/pref_train.jsonl --data.eval_files $(DATA_DIR)/sft/pref_heldout.jsonl \
	  --run_dir $(ART)/align/reward $(if $(NPROC),--nproc $(NPROC)) $(ARGS)

dpo: setup ## direct preference optimisation of the SFT model -> $(ART)/align/dpo/final
	$(PY) -m align dpo --config $(DPO_CONFIG) --model_dir $(SFT_MODEL) --tokenizer_dir $(SFT_MODEL) \
	  --data.train_files $(DATA_DIR)/sft/pref_train.jsonl --data.eval_files $(DATA_DIR)/sft/pref_heldout.jsonl \
	  --cache_dir $(ART)/cache --run_dir $(ART)/align/dpo $(if $(NPROC),--nproc $(NPROC)) $(ARGS)

rl: setup ## online RL (RLOO) against the reward model -> $(ART)/align/rl/final (+ logs/rl.png)
	$(PY) -m align rl --config $(RL_CONFIG) --model_dir $(SFT_MODEL) --tokenizer_dir $(SFT_MODEL) \
	  --prompts.files $(DATA_DIR)/sft/pref_train.jsonl --reward $(ART)/align/reward/final \
	  --run_dir $(ART)/align/rl $(if $(NPROC),--nproc $(NPROC)) $(ARGS)

compare: setup ## aligned policies vs the SFT model on held-out prompts -> $(ART)/align/compare/report.md
	$(PY) -m align compare --config $(COMPARE_CONFIG) --sft_model $(SFT_MODEL) --reward_model $(ART)/align/reward/final \
	  --policies $(ART)/align/dpo/final --policies $(ART)/align/rl/final --pairs $(DATA_DIR)/sft/pref_heldout.jsonl \
	  --out_dir $(ART)/align/compare $(ARGS)

demo: setup ## the whole chain on the default data with a small stand-in model
	$(MAKE) corpus CORPUS_ARGS="$(DEMO_CORPUS_ARGS)"
	$(MAKE) vocab
	$(MAKE) merge-tokenizer
	$(MAKE) pretrain TRAIN_ARGS="--max_steps 40 --overwrite"
	$(MAKE) eval MODEL=$(ART)/pretrain/$(RUN)/final BASELINE=$(ART)/standin \
	  EVAL_FILES="$(ART)/corpus/heldout/heldout.jsonl tests/data/english_eval_pydoc.txt" ARGS="--max_documents_per_file 40"
	$(MAKE) benchmark MODEL=$(ART)/pretrain/$(RUN)/final BASELINE=$(ART)/standin BENCHMARK_CONFIG=configs/mcq/score_agieval.yaml SUBJECTS="history geography biology" ARGS="--max_questions_per_subject 15 --method both"
	$(MAKE) sft SFT_ARGS="--overwrite"
	$(PY) -m sft generate --config configs/sft/generate.yaml --model $(ART)/sft/$(RUN)/final \
	  --input $(DATA_DIR)/sft/sft_heldout.jsonl --output $(ART)/sft/$(RUN)/generations.jsonl \
	  --tiers '[A]' --limit 4 --generation.max_new_tokens 48 $(DEMO_SAMPLING)
	$(MAKE) reward ARGS="--overwrite"
	$(MAKE) dpo ARGS="--overwrite"
	$(MAKE) rl ARGS="--overwrite"
	$(MAKE) compare ARGS="$(DEMO_SAMPLING)"
	@echo "demo done: see $(ART)/tokenizer/report.md, $(ART)/eval/report.md, $(ART)/sft/$(RUN)/generations.jsonl, $(ART)/align/compare/report.md"

test: setup ## the full test suite (CPU, < 15 min on 2 cores)
	$(PY) -m pytest tests -q $(ARGS)

bench: setup ## every benchmark in bench/ (prints ratios against a same-run baseline)
	for b in corpus tokenizer init packing train eval mcq sft align; do $(PY) bench/$$b.py || exit 1; done

lint: setup
	$(PY) -m ruff check zhllama corpora vocab pretrain mcq sft align tests bench

clean:
	rm -rf $(ART)

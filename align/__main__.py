"""``python -m align COMMAND``: learning from preferences: reward model, DPO, online RL, comparison."""
import sys

from zhllama.cli import main

COMMANDS = {
    "reward": ("align.train_reward:RewardConfig", "align.train_reward:run",
               "train a reward model on preference pairs (DeepSpeed, full or LoRA)"),
    "dpo": ("align.train_dpo:DpoConfig", "align.train_dpo:run",
            "direct preference optimisation of the SFT model (cached or adapter-disabled reference)"),
    "rl": ("align.train_rl:RlConfig", "align.train_rl:run",
           "online RL (RLOO) against a reward model or a rule, KL-penalised to the SFT model"),
    "compare": ("align.compare:CompareConfig", "align.compare:run",
                "policies on held-out prompts: reward, win rate vs SFT, length, implicit DPO accuracy"),
}

if __name__ == "__main__":
    sys.exit(main("align", COMMANDS))

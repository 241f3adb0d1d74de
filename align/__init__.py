"""zhllama stage: align. Learning from preferences on top of the SFT chat model.

Pure cores: ``prefs`` (read + validate pairs), ``pairs`` (ids, fitting), ``logprobs`` (reply
log-probs), ``dpo`` (losses), ``refcache`` (reference log-probs), ``reward`` (scalar head, pairwise
loss, report), ``rl`` (RLOO rollouts, loss), ``rewards`` (reward model or rules). Tasks on the
shared engine: ``train_reward``, ``train_dpo``, ``train_rl``; evaluation: ``compare``.
CLI: ``python -m align reward|dpo|rl|compare``.
"""

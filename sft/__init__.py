"""Supervised chat fine-tuning in the Llama-2 chat format (``python -m sft train|chat|generate|eval``).

Reusable pure pieces (the alignment stage builds on them):

- :mod:`sft.dialog` - dialog rules, delimiter rejection/escaping;
- :mod:`sft.formats`, :mod:`sft.records` - chat files (messages, ShareGPT, Alpaca as YAML data) ->
  validated dialogs, with a manifest (read = used + rejected);
- :mod:`sft.chat_format` - Meta's Llama-2 chat ids (``encode_prompt``, ``encode_dialog`` with labels
  and turn-aware truncation), the Jinja ``chat_template``;
- :mod:`sft.packing` - several conversations per row, restarting positions, collation;
- :mod:`sft.loss` - summed token NLL and unit counts (token-weighted across micro-batches and ranks).
"""

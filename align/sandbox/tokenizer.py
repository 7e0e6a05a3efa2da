"""The sandbox tokenizer: byte-level BPE trained on the world's training text with `tokenizers`,
saved as a Hugging Face fast tokenizer with a chat template.

Digits are split one per token so arithmetic is spelled digit by digit. Held-out entities are
not in the training text, so they are spelled in pieces the model has to copy.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

BOS, EOS, PAD = "<s>", "</s>", "<pad>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")

# One turn per role marker; the assistant turn ends with EOS. ``add_generation_prompt`` opens an
# assistant turn. ``{% generation %}`` marks the answer tokens for assistant-only masks.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "<|assistant|>{% generation %}{{ message['content'] }}{{ eos_token }}{% endgeneration %}"
    "{% else %}<|{{ message['role'] }}|>{{ message['content'] }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def train_tokenizer(texts: Iterable[str], *, vocab_size: int, atoms: Iterable[str] = (),
                    atom_weight: int = 200) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``texts`` and wrap it with the chat template.

    ``atoms`` (entity syllables) are added to the corpus ``atom_weight`` times each, alone and
    after a space, so each becomes a token; texts should spell entities as spaced syllables so
    no merge spans two syllables and every entity, seen or held out, is tokenized alike.
    """
    atoms = list(atoms)
    texts = [*texts, *([a for a in atoms] * atom_weight), *([f"x {a}" for a in atoms] * atom_weight)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[PAD, BOS, EOS, *ROLE_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
        extra_special_tokens=list(ROLE_TOKENS), model_max_length=4096)
    hf.chat_template = CHAT_TEMPLATE
    return hf

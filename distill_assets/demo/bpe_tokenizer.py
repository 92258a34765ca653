"""A byte-level BPE tokenizer of its own for the demo's cross-tokenizer student.

    python -m distill_assets.demo.bpe_tokenizer      # writes distill_assets/demo/models/student_bpe/

The demo's teachers read one character per token (tiny_models.py); this tokenizer merges the
character pairs most frequent in the demo's training prompts and answers ("20", "Convert ",
" kg"...), so a student on it splits the same text into other, fewer tokens, with other ids:
what cross-tokenizer distillation has to bridge. It keeps the teachers' special tokens and chat
template, so a prompt renders to the same text for both. The build is deterministic (same data,
same merges), takes well under a second, and its files are committed beside the teachers'.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from distill_assets.demo.make_data import DATA_DIR
from distill_assets.demo.tiny_models import SPECIAL_TOKENS, with_demo_chat

OUT_DIR = Path(__file__).parent / "models" / "student_bpe"
VOCAB_SIZE = 384  # the 256 bytes, the 7 special tokens and about 120 merges


def training_texts(data_dir: Path = DATA_DIR) -> list[str]:
    """Every training prompt and answer of the demo's tasks, in file order (never an eval prompt)."""
    texts = []
    for path in sorted(data_dir.glob("*_train.jsonl")):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            texts += [row["prompt"], row["answer"]]
    return texts


def build_bpe_tokenizer(
    texts: list[str], vocab_size: int = VOCAB_SIZE, model_max_length: int = 128
) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on `texts`, with the demo teachers' special tokens and chat template."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # any byte encodes, seen in training or not
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    return with_demo_chat(backend, model_max_length)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    parser.add_argument("--vocab-size", type=int, default=VOCAB_SIZE)
    args = parser.parse_args()
    tokenizer = build_bpe_tokenizer(training_texts(), args.vocab_size)
    tokenizer.save_pretrained(args.out)
    print(f"{len(tokenizer)} tokens -> {args.out}")


if __name__ == "__main__":
    main()

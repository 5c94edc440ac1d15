"""Characters for CTC speech recognition: transcript normalisation, vocabulary, tokenizer, labels.

The vocabulary (`vocab.json`, read by Transformers' `Wav2Vec2CTCTokenizer`) is built from the
training transcripts after `normalize_transcript`:

    0 <pad>   the CTC blank (`config.pad_token_id`), also used to pad token sequences
    1 <unk>   every character outside the vocabulary
    2 |       the word delimiter (spaces in transcripts)
    3 ...     the apostrophe and the letters the training transcripts contain, sorted

Any other character of a transcript (digits, punctuation not removed by `chars_to_ignore`, a letter
that only occurs in the test set) becomes <unk> in the labels: `CtcCollator` counts these and logs
each such character once, and the count travels with the batch (`num_unknown_chars`).
"""

from __future__ import annotations

import json
import logging
import os
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import Wav2Vec2CTCTokenizer

from .speech_data import AudioCollator

logger = logging.getLogger(__name__)

PAD_TOKEN, UNK_TOKEN, WORD_DELIMITER = "<pad>", "<unk>", "|"
SPECIAL_TOKENS = (PAD_TOKEN, UNK_TOKEN, WORD_DELIMITER)
# Label padding ignored by the CTC loss (and by Transformers' conventions).
LABEL_PAD_ID = -100


def normalize_transcript(text: str, chars_to_ignore: str = "") -> str:
    """Upper case, the characters of `chars_to_ignore` removed, whitespace runs collapsed to one space.

    >>> normalize_transcript("  Don't   stop, now! ", chars_to_ignore=",!")
    "DON'T STOP NOW"
    """
    if chars_to_ignore:
        text = text.translate({ord(char): None for char in chars_to_ignore})
    return " ".join(text.upper().split())


def is_vocabulary_character(char: str) -> bool:
    """Letters (any script) and the apostrophe make up the vocabulary."""
    return char.isalpha() or char == "'"


def build_vocabulary(transcripts: Iterable[str]) -> dict[str, int]:
    """Token -> id for the normalised `transcripts` (see the module docstring for the layout).

    Raises:
        ValueError: the transcripts contain no letter at all (wrong text column, or no transcripts).
    """
    characters = {char for text in transcripts for char in text if is_vocabulary_character(char)}
    if not any(char.isalpha() for char in characters):
        raise ValueError("The training transcripts contain no letters, so there is no vocabulary to build; check "
                         "--text_column (CTC fine-tuning needs transcripts).")
    return {token: index for index, token in enumerate([*SPECIAL_TOKENS, *sorted(characters)])}


def unknown_characters(transcripts: Iterable[str], vocab: Mapping[str, int]) -> Counter:
    """How often each character of the normalised `transcripts` is outside `vocab` (spaces excluded)."""
    return Counter(char for text in transcripts for char in text if char != " " and char not in vocab)


def describe_characters(counts: Mapping[str, int]) -> str:
    """{'É': 2, '4': 1} -> "'É' (U+00C9, LATIN CAPITAL LETTER E WITH ACUTE) x2, '4' (U+0034, DIGIT FOUR) x1"."""
    return ", ".join(f"{char!r} (U+{ord(char):04X}, {unicodedata.name(char, 'unnamed')}) x{count}"
                     for char, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def create_tokenizer(vocab: Mapping[str, int], directory: str | os.PathLike) -> Wav2Vec2CTCTokenizer:
    """Write `vocab` to `directory`/vocab.json and return the CTC tokenizer reading it."""
    os.makedirs(directory, exist_ok=True)
    vocab_file = os.path.join(directory, "vocab.json")
    with open(vocab_file, "w", encoding="utf-8") as handle:
        json.dump(dict(vocab), handle, ensure_ascii=False, indent=2)
    return load_tokenizer(vocab_file)


def load_tokenizer(vocab_file: str | os.PathLike) -> Wav2Vec2CTCTokenizer:
    """The CTC tokenizer of a vocab.json laid out as in this module (no bos/eos tokens)."""
    with open(vocab_file, encoding="utf-8") as handle:
        vocab = json.load(handle)
    missing = [token for token in SPECIAL_TOKENS if token not in vocab]
    if missing:
        raise ValueError(f"{vocab_file} lacks the tokens {missing}; a CTC vocabulary needs {list(SPECIAL_TOKENS)}.")
    return Wav2Vec2CTCTokenizer(str(vocab_file), unk_token=UNK_TOKEN, pad_token=PAD_TOKEN,
                                word_delimiter_token=WORD_DELIMITER, bos_token=None, eos_token=None)


@dataclass
class CtcCollator:
    """`AudioCollator` plus CTC labels: pads audio exactly as for distillation, then tokenises the text.

    Adds to the audio batch:
        ``text``: the normalised transcripts (the references that WER/CER are computed against);
        ``labels``: long (B, L) token ids, padded with -100 (L = longest label sequence, 0 if none);
        ``num_unknown_chars``: long scalar, characters of this batch that became <unk>.
    The first time a character outside the vocabulary shows up (in this process) it is logged
    with the utterance it came from.
    """

    tokenizer: Wav2Vec2CTCTokenizer
    chars_to_ignore: str = ""
    audio_collator: AudioCollator = field(default_factory=AudioCollator)
    reported: set[str] = field(default_factory=set, repr=False)

    def __call__(self, items: Sequence[Mapping[str, Any] | None]) -> dict[str, Any]:
        batch = self.audio_collator(items)
        texts = [normalize_transcript(text, self.chars_to_ignore) for text in batch.get("text", [])]
        ids = [self.tokenizer(text).input_ids for text in texts]
        labels = torch.full((len(ids), max(map(len, ids), default=0)), LABEL_PAD_ID, dtype=torch.long)
        for row, sequence in enumerate(ids):
            labels[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
        num_unknown = int((labels == self.tokenizer.unk_token_id).sum())
        if num_unknown:
            self._report(texts, batch.get("id", [None] * len(texts)))
        if "text" in batch:
            batch["text"] = texts
        batch["labels"] = labels
        batch["num_unknown_chars"] = torch.tensor(num_unknown, dtype=torch.long)
        return batch

    def _report(self, texts: list[str], utterance_ids: list[str | None]) -> None:
        vocab = self.tokenizer.get_vocab()
        for text, utterance_id in zip(texts, utterance_ids):
            new = {char: count for char, count in unknown_characters([text], vocab).items()
                   if char not in self.reported}
            if new:
                self.reported.update(new)
                logger.warning("Transcript of %s has characters outside the vocabulary: %s. They become %s in the "
                               "labels (the model cannot learn to output them); remove punctuation with "
                               "--chars_to_ignore.", utterance_id, describe_characters(new), UNK_TOKEN)

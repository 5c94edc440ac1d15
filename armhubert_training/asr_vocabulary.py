"""CTC targets and vocabularies: characters (speech recognition), phonemes (phoneme recognition) and
characters with slot tags (slot filling), one vocabulary layout and one collator for all three.

A target encoder turns a transcript into the tokens the model learns to emit and the reference
string its hypotheses are scored against (`Target`):

    CharacterTargets  "Don't stop"  -> D O N ' T | S T O P                    ref "DON'T STOP"
    PhonemeTargets    "DON'T STOP"  -> D OW1 N T S T AA1 P  (pronunciation lexicon)  ref "D OW1 N T S T AA1 P"
    SlotTargets       "BOS PLAY ABBA EOS\tO O artist PlayMusic" -> P L A Y | B-artist␣ A B B A ␣E-artist
                                                                          ref "PLAY B-artist ABBA E-artist"

The vocabulary (`vocab.json`, read by Transformers' `Wav2Vec2CTCTokenizer`, or by
`Wav2Vec2PhonemeCTCTokenizer` for phonemes) is laid out as

    0 <pad>   the CTC blank (`config.pad_token_id`), also used to pad token sequences
    1 <unk>   every character outside the vocabulary
    2 <eos>   only with `append_eos`: ends every target, as in SUPERB (character targets with "|" <eos>,
              closing the last word as SUPERB's speech recognition does); dropped when decoding
      |       the word delimiter (spaces in transcripts; characters and slots only)
      ...     the units: the apostrophe and the letters of the training transcripts, sorted
              (characters, slots); SUPERB's 71 phones (phonemes); then "B-<slot> " and " E-<slot>"
              per slot label (slots), spelled with the space that separates them from the value
              in decoded text, so that the stock tokenizer decodes them as SUPERB writes them.

Any other character of a transcript (digits, punctuation not removed by `chars_to_ignore`, a letter
that only occurs in the test set) becomes <unk> in the labels: `CtcCollator` counts these and logs
each such character once, and the count travels with the batch (`num_unknown_chars`). A transcript
that cannot be encoded at all (a word missing from the lexicon, a slot label missing from the
vocabulary) raises `TargetError`; the scripts leave such utterances out before training.
"""

from __future__ import annotations

import json
import logging
import os
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import torch
from transformers import PreTrainedTokenizer, Wav2Vec2CTCTokenizer, Wav2Vec2PhonemeCTCTokenizer

from .collators import AudioCollator

logger = logging.getLogger(__name__)

PAD_TOKEN, UNK_TOKEN, EOS_TOKEN, WORD_DELIMITER = "<pad>", "<unk>", "<eos>", "|"
SPECIAL_TOKENS = (PAD_TOKEN, UNK_TOKEN, WORD_DELIMITER)  # those of a character vocabulary
# Label padding ignored by the CTC loss (and by Transformers' conventions).
LABEL_PAD_ID = -100

# SUPERB's phone inventory: silence, spoken noise, and the ARPAbet phones of the LibriSpeech g2p lexicons,
# vowels with their stress digit (0 none, 1 primary, 2 secondary), which is kept.
_VOWELS = "AA AE AH AO AW AY EH ER EY IH IY OW OY UH UW".split()
_CONSONANTS = "B CH D DH F G HH JH K L M N NG P R S SH T TH V W Y Z ZH".split()
PHONES: tuple[str, ...] = ("SIL", "SPN", *sorted([v + stress for v in _VOWELS for stress in "012"] + _CONSONANTS))
# Words of a SNIPS line that SUPERB leaves out of the targets, and the one it spells out.
_SNIPS_SKIPPED_WORDS = frozenset("?!.,;-")
_SNIPS_SPELLED = {"&": "AND"}


class TargetError(ValueError):
    """A transcript cannot be turned into targets (not a character that becomes <unk>: a whole word or tag)."""


class Target(NamedTuple):
    """What the model learns for one utterance, and what its hypothesis is scored against."""

    reference: str
    tokens: list[str]


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


def vocabulary_characters(words: Iterable[str]) -> list[str]:
    """The sorted vocabulary characters of `words` (letters and apostrophe).

    Raises:
        ValueError: they contain no letter at all (wrong text column, or no transcripts).
    """
    characters = {char for word in words for char in word if is_vocabulary_character(char)}
    if not any(char.isalpha() for char in characters):
        raise ValueError("The training transcripts contain no letters, so there is no vocabulary to build; check "
                         "--text_column (CTC fine-tuning needs transcripts).")
    return sorted(characters)


# ----------------------------------------------------------------------------------------------
# Target encoders
# ----------------------------------------------------------------------------------------------


@dataclass
class CharacterTargets:
    """Characters of the normalised transcript, "|" between words (speech recognition)."""

    chars_to_ignore: str = ""
    units: ClassVar[str] = "characters"
    word_delimiter: ClassVar[bool] = True
    # SUPERB's speech recognition targets close the last word too: "S T O P | <eos>" (s3prl's asr/dataset.py).
    delimiter_before_eos: ClassVar[bool] = True

    def encode(self, text: str) -> Target:
        reference = normalize_transcript(text, self.chars_to_ignore)
        return Target(reference, [WORD_DELIMITER if char == " " else char for char in reference])

    def inventory(self, transcripts: Iterable[str]) -> list[str]:
        """The units of a vocabulary for these training transcripts (special tokens excluded)."""
        return vocabulary_characters(self.encode(text).reference for text in transcripts)


def read_lexicon(paths: Sequence[str | os.PathLike]) -> dict[str, list[str]]:
    """Word -> phones from pronunciation lexicons in the LibriSpeech format ("WORD PH1 PH2 ...", one per line).

    The files are read in order and a word keeps the first pronunciation found (in the first file
    that has it, at its first line there), as SUPERB does. Every phone must be one of `PHONES`.

    Raises:
        FileNotFoundError: a file does not exist.
        ValueError: a line is not UTF-8 text, has a word but no phone, or a phone outside SUPERB's inventory.
    """
    known = set(PHONES)
    lexicon: dict[str, list[str]] = {}
    for path in paths:
        with open(path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                # Decoded line by line, so that a file in another encoding is named with its first bad line.
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise ValueError(
                        f"{path}:{number}: not UTF-8 text (byte 0x{raw[err.start]:02x} at column {err.start + 1} of "
                        f"{raw.rstrip()!r}); re-save the lexicon as UTF-8.") from None
                if not line.strip():
                    continue
                word, *phones = line.split()
                if not phones or not known.issuperset(phones):
                    raise ValueError(
                        f"{path}:{number}: {line.strip()!r} is not 'WORD PHONE ...' with phones of SUPERB's "
                        f"inventory ({' '.join(PHONES)}); {sorted(set(phones) - known) or 'no phones'} found.")
                lexicon.setdefault(word, phones)
    if not lexicon:
        raise ValueError(f"The lexicon files {list(map(str, paths))} hold no pronunciation.")
    return lexicon


@dataclass
class PhonemeTargets:
    """The phones of each word of the normalised transcript, from a pronunciation lexicon (phoneme
    recognition). `missing_words` counts the words of the transcripts `has_targets` refused."""

    lexicon: Mapping[str, Sequence[str]]
    chars_to_ignore: str = ""
    missing_words: Counter = field(default_factory=Counter, repr=False)
    units: ClassVar[str] = "phonemes"
    # What makes `has_targets` refuse a transcript, as the warning naming the refused utterances says it.
    refusal: ClassVar[str] = "with a word missing from the lexicon"
    word_delimiter: ClassVar[bool] = False
    delimiter_before_eos: ClassVar[bool] = False

    def encode(self, text: str) -> Target:
        words = normalize_transcript(text, self.chars_to_ignore).split()
        missing = [word for word in words if word not in self.lexicon]
        if missing:
            raise TargetError(f"words missing from the lexicon: {' '.join(missing)}")
        phones = [phone for word in words for phone in self.lexicon[word]]
        return Target(" ".join(phones), phones)

    def has_targets(self, text: str) -> bool:
        """Whether every word of `text` is in the lexicon; counts the missing ones in `missing_words`."""
        missing = [word for word in normalize_transcript(text, self.chars_to_ignore).split()
                   if word not in self.lexicon]
        self.missing_words.update(missing)
        return not missing

    def inventory(self, transcripts: Iterable[str]) -> list[str]:
        return list(PHONES)


def slot_tags(label: str) -> tuple[str, str]:
    """The begin and end tokens of a slot label, spelled as decoded text shows them: ("B-x ", " E-x")."""
    return f"B-{label} ", f" E-{label}"


@dataclass
class SlotTargets:
    """Characters of a SNIPS sentence with its slot values wrapped in slot-tag tokens (slot filling).

    `text` is a line of SNIPS' all.iob.snips.txt after the utterance id: "BOS W1 ... Wn EOS", a tab,
    "O L1 ... Ln INTENT" (one slot label per word, "O" for none). As in SUPERB, a run of words with
    the same label becomes "B-label" token, the run's characters, "E-label" token; the words
    ?!.,;- are left out and & is spelled AND; the intent is not a target.
    """

    slot_labels: Sequence[str]
    units: ClassVar[str] = "slots"
    refusal: ClassVar[str] = ("whose slot labels do not match their words (one label per word) or name a slot "
                              "outside slots.txt")
    word_delimiter: ClassVar[bool] = True
    delimiter_before_eos: ClassVar[bool] = False  # SUPERB's slot targets end "... ␣E-artist <eos>"

    def __post_init__(self) -> None:
        self._labels = set(self.slot_labels)

    @staticmethod
    def words_and_labels(text: str) -> tuple[list[str], list[str]]:
        """The words of a SNIPS line and their slot labels (BOS/EOS, the leading O and the intent dropped)."""
        sentence, tab, annotation = text.strip().partition("\t")
        words, labels = sentence.split()[1:-1], annotation.split()[1:-1]
        if not tab or len(words) != len(labels):
            raise TargetError(f"not a SNIPS line 'BOS words EOS<TAB>O labels intent' with one label per word: {text!r}")
        return words, labels

    def encode(self, text: str) -> Target:
        words, labels = self.words_and_labels(text)
        unknown = sorted({label for label in labels if label != "O"} - self._labels)
        if unknown:
            raise TargetError(f"slot labels outside the vocabulary's slots: {unknown}")
        tokens: list[str] = []
        for i, (word, label) in enumerate(zip(words, labels)):
            if word in _SNIPS_SKIPPED_WORDS:
                continue
            begin, end = slot_tags(label)
            if tokens:
                tokens.append(WORD_DELIMITER)
            if label != "O" and (i == 0 or labels[i - 1] != label):
                tokens.append(begin)
            tokens += _SNIPS_SPELLED.get(word, word)
            if label != "O" and (i == len(words) - 1 or labels[i + 1] != label):
                tokens.append(end)
        return Target("".join(tokens).replace(WORD_DELIMITER, " "), tokens)

    def has_targets(self, text: str) -> bool:
        try:
            self.encode(text)
        except TargetError:
            return False
        return True

    def inventory(self, transcripts: Iterable[str]) -> list[str]:
        words = [word for text in transcripts for word in self.words_and_labels(text)[0]]
        return [*vocabulary_characters(words), *[tag for label in self.slot_labels for tag in slot_tags(label)]]


TargetEncoder = CharacterTargets | PhonemeTargets | SlotTargets


def read_slot_labels(path: str | os.PathLike) -> list[str]:
    """The slot labels of SNIPS' slots.txt (one per line), without "O" (no slot)."""
    with open(path, encoding="utf-8") as handle:
        return [label for label in (line.strip() for line in handle) if label and label != "O"]


# ----------------------------------------------------------------------------------------------
# Vocabulary and tokenizer
# ----------------------------------------------------------------------------------------------


def build_vocabulary(transcripts: Iterable[str], encoder: TargetEncoder | None = None,
                     append_eos: bool = False) -> dict[str, int]:
    """Token -> id for the training `transcripts` under `encoder` (default: characters); see the module
    docstring for the layout.

    Raises:
        ValueError: the transcripts contain no letter at all (characters and slots).
    """
    encoder = encoder if encoder is not None else CharacterTargets()
    specials = [PAD_TOKEN, UNK_TOKEN, *[EOS_TOKEN] * append_eos, *[WORD_DELIMITER] * encoder.word_delimiter]
    return {token: index for index, token in enumerate([*specials, *encoder.inventory(transcripts)])}


def target_units(vocab: Mapping[str, int]) -> str:
    """What a vocabulary laid out as in this module encodes: 'phonemes', 'slots' or 'characters'."""
    if WORD_DELIMITER not in vocab and "SIL" in vocab:
        return "phonemes"
    return "slots" if slot_labels_of(vocab) else "characters"


def slot_labels_of(vocab: Mapping[str, int]) -> list[str]:
    """The slot labels whose tag tokens a vocabulary holds, in vocabulary order."""
    return [token[2:-1] for token in vocab if token.startswith("B-") and token.endswith(" ")]


def create_tokenizer(vocab: Mapping[str, int], directory: str | os.PathLike) -> PreTrainedTokenizer:
    """Write `vocab` to `directory`/vocab.json and return the CTC tokenizer reading it."""
    os.makedirs(directory, exist_ok=True)
    vocab_file = os.path.join(directory, "vocab.json")
    with open(vocab_file, "w", encoding="utf-8") as handle:
        json.dump(dict(vocab), handle, ensure_ascii=False, indent=2)
    return load_tokenizer(vocab_file)


def load_tokenizer(vocab_file: str | os.PathLike) -> PreTrainedTokenizer:
    """The CTC tokenizer of a vocab.json laid out as in this module: `Wav2Vec2PhonemeCTCTokenizer`
    (space-separated phones, no phonemizer) for phonemes, else `Wav2Vec2CTCTokenizer`."""
    try:
        with open(vocab_file, encoding="utf-8") as handle:
            vocab = json.load(handle)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{vocab_file} is not a JSON vocabulary ({err}); it must map each token to its id, "
                         '{"<pad>": 0, "<unk>": 1, ...}, as the vocab.json a run writes does.') from err
    if not isinstance(vocab, dict) or not all(isinstance(i, int) for i in vocab.values()):
        raise ValueError(f"{vocab_file} must map each token to an integer id, "
                         '{"<pad>": 0, "<unk>": 1, ...}, as the vocab.json a run writes does.')
    units = target_units(vocab)
    required = SPECIAL_TOKENS if units != "phonemes" else (PAD_TOKEN, UNK_TOKEN)
    missing = [token for token in required if token not in vocab]
    if missing:
        raise ValueError(f"{vocab_file} lacks the tokens {missing}; a CTC vocabulary needs {list(SPECIAL_TOKENS)} "
                         f"(a phoneme vocabulary {[PAD_TOKEN, UNK_TOKEN]}).")
    eos = EOS_TOKEN if EOS_TOKEN in vocab else None
    if units == "phonemes":
        return Wav2Vec2PhonemeCTCTokenizer(str(vocab_file), unk_token=UNK_TOKEN, pad_token=PAD_TOKEN, bos_token=None,
                                           eos_token=eos, word_delimiter_token=None, do_phonemize=False)
    return Wav2Vec2CTCTokenizer(str(vocab_file), unk_token=UNK_TOKEN, pad_token=PAD_TOKEN,
                                word_delimiter_token=WORD_DELIMITER, bos_token=None, eos_token=eos)


def unknown_tokens(token_lists: Iterable[Sequence[str]], vocab: Mapping[str, int]) -> Counter:
    """How often each token of `token_lists` is outside `vocab`."""
    return Counter(token for tokens in token_lists for token in tokens if token not in vocab)


def unknown_characters(transcripts: Iterable[str], vocab: Mapping[str, int]) -> Counter:
    """How often each character of the normalised `transcripts` is outside `vocab` (spaces excluded)."""
    return Counter(char for text in transcripts for char in text if char != " " and char not in vocab)


def describe_characters(counts: Mapping[str, int]) -> str:
    """{'É': 2, '4': 1} -> "'É' (U+00C9, LATIN CAPITAL LETTER E WITH ACUTE) x2, '4' (U+0034, DIGIT FOUR) x1"."""
    return ", ".join(f"{char!r} (U+{ord(char):04X}, {unicodedata.name(char, 'unnamed')}) x{count}"
                     if len(char) == 1 else f"{char!r} x{count}"
                     for char, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])))


@dataclass
class CtcCollator:
    """`AudioCollator` plus CTC labels: pads audio exactly as for distillation, then encodes the transcripts.

    Adds to the audio batch:
        ``text``: the references that the metrics are computed against (`Target.reference`);
        ``labels``: long (B, L) token ids, each sequence ended by <eos> when the vocabulary has it (after
            a closing "|" for character targets), padded with -100 (L = longest label sequence, 0 if none);
        ``label_lengths``: list of B ints, the token ids in each row of ``labels``, which the CTC loss
            needs on the host (as ``input_lengths``, see `AudioCollator`);
        ``num_unknown_chars``: int, characters of this batch that became <unk>.
    The first time a character outside the vocabulary shows up (in this process) it is logged
    with the utterance it came from.
    """

    tokenizer: PreTrainedTokenizer
    encoder: TargetEncoder = field(default_factory=CharacterTargets)
    audio_collator: AudioCollator = field(default_factory=AudioCollator)
    reported: set[str] = field(default_factory=set, repr=False)

    def __call__(self, items: Sequence[Mapping[str, Any] | None]) -> dict[str, Any]:
        batch = self.audio_collator(items)
        targets = [self.encoder.encode(text) for text in batch.get("text", [])]
        end = []
        if self.tokenizer.eos_token_id is not None:
            closing = [WORD_DELIMITER] if self.encoder.delimiter_before_eos else []
            end = self.tokenizer.convert_tokens_to_ids(closing) + [self.tokenizer.eos_token_id]
        ids = [self.tokenizer.convert_tokens_to_ids(target.tokens) + end for target in targets]
        labels = torch.full((len(ids), max(map(len, ids), default=0)), LABEL_PAD_ID, dtype=torch.long)
        for row, sequence in enumerate(ids):
            labels[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
        num_unknown = int((labels == self.tokenizer.unk_token_id).sum())
        if num_unknown:
            self._report(targets, batch.get("id", [None] * len(targets)))
        if "text" in batch:
            batch["text"] = [target.reference for target in targets]
        batch["labels"] = labels
        batch["label_lengths"] = [len(sequence) for sequence in ids]
        batch["num_unknown_chars"] = num_unknown
        return batch

    def _report(self, targets: list[Target], utterance_ids: list[str | None]) -> None:
        vocab = self.tokenizer.get_vocab()
        for target, utterance_id in zip(targets, utterance_ids):
            new = {token: count for token, count in unknown_tokens([target.tokens], vocab).items()
                   if token not in self.reported}
            if new:
                self.reported.update(new)
                logger.warning("Transcript of %s has characters outside the vocabulary: %s. They become %s in the "
                               "labels (the model cannot learn to output them); remove punctuation with "
                               "--chars_to_ignore.", utterance_id, describe_characters(new), UNK_TOKEN)

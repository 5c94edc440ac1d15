"""The speech recognition pipeline that models written by `run_asr_ctc.py` carry as remote code.

    from transformers import pipeline
    asr = pipeline("automatic-speech-recognition", model="armhubert-asr", trust_remote_code=True)
    asr("speech.flac")["text"]; asr(waveform_16khz_float32)["text"]

The model's config names this class under `custom_pipelines`, so the call above builds it instead
of Transformers' `AutomaticSpeechRecognitionPipeline`, which it extends in one respect only: local
audio files and encoded audio bytes are decoded with libsndfile (soundfile) and resampled with
librosa, the way `audio.load_audio` decoded the training and evaluation audio. Transcripts
of a file then match `run_asr_ctc.py --do_predict`, and ffmpeg (which the parent class needs for
every file) is only needed for formats libsndfile cannot read. Arrays, dicts, URLs, chunking and
timestamps are the parent's. Models whose targets end with <eos> (SUPERB's recipes) emit it too:
it is decoded like the CTC blank (`eos_as_blank`), as SUPERB drops it. A phoneme recognition model
returns its phones separated by spaces ("DH AH0 K AE1 T"), a slot filling model its words with
slot tags ("PLAY B-artist ABBA E-artist").
"""

from __future__ import annotations

import io
import os
import shutil

import numpy as np
import torch
from transformers import AutomaticSpeechRecognitionPipeline

try:  # optional: without them the parent's ffmpeg decoding and torchaudio resampling are used
    import soundfile
except ImportError:
    soundfile = None
try:
    import librosa
except ImportError:
    librosa = None


def eos_as_blank(token_ids: torch.Tensor, tokenizer) -> torch.Tensor:
    """Frame-wise best token ids (..., T) with the tokenizer's <eos> replaced by the CTC blank (<pad>).

    Decoding then drops <eos> wherever the model emits it and still separates the repeats around it:
    the same text as collapsing repeats and then dropping blank and <eos>, which is SUPERB's decoding.
    """
    eos, blank = tokenizer.eos_token_id, tokenizer.pad_token_id
    return token_ids if eos is None else token_ids.masked_fill(token_ids == eos, blank)


class ArmHubertSpeechRecognitionPipeline(AutomaticSpeechRecognitionPipeline):
    """`AutomaticSpeechRecognitionPipeline` that decodes files with libsndfile, as the training data was,
    and decodes <eos> like the blank."""

    def _forward(self, model_inputs, *args, **kwargs):
        outputs = super()._forward(model_inputs, *args, **kwargs)
        if "tokens" in outputs and self.type == "ctc":
            outputs["tokens"] = eos_as_blank(outputs["tokens"], self.tokenizer)
        return outputs

    def preprocess(self, inputs, chunk_length_s=0, stride_length_s=None):
        decoded = self._decode(inputs)
        yield from super().preprocess(inputs if decoded is None else decoded, chunk_length_s, stride_length_s)

    def _decode(self, inputs):
        return decode_audio_file(inputs, self.feature_extractor.sampling_rate)


def decode_audio_file(inputs, sampling_rate: int):
    """A path or bytes -> a float32 mono waveform at `sampling_rate` (or a dict with the native rate
    when librosa is missing); a {"raw" or "array", "sampling_rate"} dict at another rate -> the same
    dict resampled with librosa (the pipeline's own resampling needs torchaudio); None when a pipeline
    should handle `inputs` itself (arrays, dicts at the right rate, URLs, formats libsndfile cannot read
    when ffmpeg is there, or no soundfile).

    Raises:
        ValueError: an empty file, or one neither libsndfile nor (since it is not installed) ffmpeg can read.
    """
    if isinstance(inputs, dict):
        return _resampled(inputs, sampling_rate)
    if soundfile is None:
        return None
    if isinstance(inputs, (str, os.PathLike)) and os.path.isfile(inputs):
        source = inputs
        if os.path.getsize(inputs) == 0:
            raise ValueError(f"{inputs} is empty (0 bytes): there is no audio to transcribe or classify.")
    elif isinstance(inputs, (bytes, bytearray)):
        source = io.BytesIO(inputs)
        if not inputs:
            raise ValueError("The audio bytes given are empty: there is no audio to transcribe or classify.")
    else:
        return None
    try:
        samples, rate = soundfile.read(source, dtype="float32", always_2d=True)  # (frames, channels)
    except soundfile.SoundFileError as err:
        if shutil.which("ffmpeg") is None:  # the pipeline would only say that ffmpeg is missing
            name = inputs if isinstance(inputs, (str, os.PathLike)) else "The audio bytes given"
            raise ValueError(f"{name} could not be decoded: libsndfile cannot read it ({err}), and ffmpeg, which "
                             "reads other formats, is not installed. Check that the file is complete audio "
                             "(WAV, FLAC, OGG, MP3), or install ffmpeg for other formats.") from err
        return None  # a format libsndfile cannot read: ffmpeg's turn
    waveform = samples.T.mean(axis=0)  # the same downmix as audio.load_audio
    if rate == sampling_rate:
        return np.ascontiguousarray(waveform, dtype=np.float32)
    if librosa is None:
        return {"raw": waveform, "sampling_rate": rate}
    return np.ascontiguousarray(librosa.resample(waveform, orig_sr=rate, target_sr=sampling_rate), dtype=np.float32)


def _resampled(inputs: dict, sampling_rate: int) -> dict | None:
    """An array input at another rate, resampled with librosa; None when nothing is to be done."""
    key = "raw" if "raw" in inputs else "array" if "array" in inputs else None
    rate = inputs.get("sampling_rate")
    if key is None or rate is None or rate == sampling_rate or librosa is None or "stride" in inputs:
        return None
    waveform = np.asarray(inputs[key], dtype=np.float32)
    resampled = librosa.resample(waveform, orig_sr=rate, target_sr=sampling_rate) if waveform.size else waveform
    return {**inputs, key: np.ascontiguousarray(resampled, dtype=np.float32), "sampling_rate": sampling_rate}

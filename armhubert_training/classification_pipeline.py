"""The audio classification pipeline that models written by `run_audio_classification.py` carry as remote code.

    from transformers import pipeline
    classify = pipeline("audio-classification", model="armhubert-ks", trust_remote_code=True)
    classify("speech.wav")[0]["label"]; classify(waveform_16khz_float32)[0]["label"]

The model's config names this class under `custom_pipelines`, so the call above builds it instead of
Transformers' `AudioClassificationPipeline`, which it extends in three respects:

- local files and encoded bytes are decoded with libsndfile and resampled with librosa, as the
  training and evaluation audio was (`asr_pipeline.decode_audio_file`), so that a file's label matches
  `run_audio_classification.py --do_predict` and ffmpeg is only needed for other formats;
- the input effects the model's config records (SUPERB's keyword spotting: a -3 dB gain) are applied to
  the waveform, as they were in training and evaluation;
- a model with several slots (intent classification: action, object, location) returns one result,
  the best value of each slot joined with "|" ("activate|lights|kitchen", the label --do_predict
  writes), scored by the product of the slots' probabilities, and under "slots" each slot's best value
  and probability. `top_k` does not apply to it.

Single-label models give the parent's output: the `top_k` labels with their softmax probabilities.
"""

from __future__ import annotations

import torch
from transformers import AudioClassificationPipeline

from .asr_pipeline import decode_audio_file
from .input_effects import InputEffects


class ArmHubertAudioClassificationPipeline(AudioClassificationPipeline):
    """`AudioClassificationPipeline` that decodes files with libsndfile and understands slot models."""

    def preprocess(self, inputs):
        decoded = decode_audio_file(inputs, self.feature_extractor.sampling_rate)
        processed = super().preprocess(inputs if decoded is None else decoded)
        effects = InputEffects.from_config(self.model.config)
        if effects.any:  # the effects the model was trained with, on the 16 kHz waveform (1, S)
            waveform = torch.from_numpy(effects(processed["input_values"][0].float().numpy()))[None]
            processed["input_values"] = waveform.to(processed["input_values"].dtype)
            if "attention_mask" in processed:
                processed["attention_mask"] = torch.ones_like(waveform, dtype=processed["attention_mask"].dtype)
        return processed

    def postprocess(self, model_outputs, top_k=5, function_to_apply=None):
        config = self.model.config
        if not config.classifier_slot_names:
            return super().postprocess(model_outputs, top_k=top_k, function_to_apply=function_to_apply)
        logits = model_outputs.logits[0].float()
        values, score, slots = [], 1.0, []
        for name, block in config.slot_slices:
            probabilities = logits[block].softmax(-1)
            best = int(probabilities.argmax())
            value = config.id2label[block.start + best].removeprefix(f"{name}=")
            values.append(value)
            score *= float(probabilities[best])
            slots.append({"slot": name, "label": value, "score": float(probabilities[best])})
        return [{"label": "|".join(values), "score": score, "slots": slots}]

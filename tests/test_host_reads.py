"""A task model's training step reads nothing back from the device.

On a GPU every read of a tensor's value (`.item()`, `int(t)`, `.tolist()`, `.cpu()`, `nonzero`) and every
blocking copy to the device makes the host wait for the kernels queued before it. The training steps
here run on the `meta` device, whose tensors have shapes but no values, so that any read fails: each
task model as its Trainer calls it (`compute_loss`), on a batch as its collator makes it, moved as the
Trainer moves batches (tensors to the device, lists left on the host). The host lengths the collators
give change no result, and eager inference still checks the input.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import Trainer, TrainingArguments

from conftest import bundled_waveforms, tiny_config
from armhubert_training.asr_trainer import CtcTrainer
from armhubert_training.asr_vocabulary import CharacterTargets, CtcCollator, build_vocabulary, create_tokenizer
from armhubert_training.classification_trainer import ClassificationTrainer
from armhubert_training.collators import ClassificationCollator, DiarizationCollator
from armhubert_training.corpora.labels import LabelSet
from armhubert_training.diarization_trainer import DiarizationTrainer
from armhubert_training.speech_trainer import SplitScoringTrainer
from armhubert_training.verification_trainer import SpeakerVerificationTrainer
from modeling_armhubert import (ArmHubertForCTC, ArmHubertForSequenceClassification, ArmHubertForSuperbCTC,
                                ArmHubertForSuperbDiarization, ArmHubertForXVector, ArmHubertPreTrainedModel)

DEVICE = torch.device("meta")
SAMPLES = (24000, 17000, 20000)  # three utterances of different lengths: a padded batch
LABELS = LabelSet.single(["down", "go", "up"])
# The student's SpecAugment (time and channel masks), for the models that train it.
STUDENT_SPEC_AUGMENT = dict(layer_grad_scale=False, projection_dim=0, mask_time_prob=0.3, mask_time_length=2,
                            mask_feature_prob=0.2, mask_feature_length=4)


class _DeviceReads(TorchDispatchMode):
    """Fails on an op that reads a `meta` ("device") tensor's value on the host, with the op's name; records
    each blocking host-to-device copy (CUDA's sync debug mode counts these as synchronisations too)."""

    def __init__(self, blocking_uploads: list[str]):
        super().__init__()
        self.blocking_uploads = blocking_uploads

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        packet = func.overloadpacket
        if packet in (torch.ops.aten._local_scalar_dense, torch.ops.aten.nonzero) and args[0].device == DEVICE:
            raise AssertionError(f"{func} reads a device tensor back to the host")
        if packet in (torch.ops.aten._to_copy, torch.ops.aten.copy_):
            source, target = ((args[0].device, torch.device(kwargs.get("device") or args[0].device))
                              if packet is torch.ops.aten._to_copy else (args[1].device, args[0].device))
            if source == DEVICE and target.type == "cpu":
                raise AssertionError(f"{func} copies a device tensor back to the host")
            non_blocking = kwargs.get("non_blocking", args[2] if len(args) > 2 else False)
            if source.type == "cpu" and target == DEVICE and not non_blocking:
                self.blocking_uploads.append(str(func))
        return func(*args, **kwargs)


class _HostDataOnDevice(TorchFunctionMode):
    """Records `torch.tensor(data, device=...)` onto the device: a blocking copy that the dispatcher's
    Python modes do not see."""

    def __init__(self, blocking_uploads: list[str]):
        super().__init__()
        self.blocking_uploads = blocking_uploads

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.tensor, torch.as_tensor) and kwargs.get("device") is not None:
            if torch.device(kwargs["device"]) == DEVICE:
                self.blocking_uploads.append(f"{func.__name__}(..., device={DEVICE})")
        return func(*args, **kwargs)


@contextlib.contextmanager
def _device_traffic() -> Iterator[list[str]]:
    """Fails on any read of a device tensor on the host; yields the list of blocking copies to the device."""
    blocking_uploads: list[str] = []
    with _HostDataOnDevice(blocking_uploads), _DeviceReads(blocking_uploads):
        yield blocking_uploads


@pytest.fixture(scope="module", autouse=True)
def meta_ctc_backward():
    """PyTorch has no meta kernel for the CTC loss's backward: a stand-in that gives the gradient's shape."""
    library = torch.library.Library("aten", "IMPL")
    library.impl("_ctc_loss_backward", lambda grad, log_probs, *args: torch.empty_like(log_probs), "Meta")
    yield
    library._destroy()


def to_device(batch: dict, device: torch.device) -> dict:
    """The batch as the Trainer hands it to `compute_loss`: its own `_prepare_input`, with `device`."""
    trainer = SimpleNamespace(args=SimpleNamespace(device=device), is_deepspeed_enabled=False)
    trainer._prepare_input = functools.partial(Trainer._prepare_input, trainer)
    return trainer._prepare_input(dict(batch))


def _waveforms() -> list[np.ndarray]:
    return [waveform[:n].numpy() for waveform, n in zip(bundled_waveforms(count=3), SAMPLES)]


def _ctc_batch(tokenizer) -> dict:
    texts = ["THE WORK", "ART", "OF THE ART"]
    items = [{"input_values": w, "text": text, "id": f"u{i}"} for i, (w, text) in enumerate(zip(_waveforms(), texts))]
    return CtcCollator(tokenizer, encoder=CharacterTargets())(items)


def _classification_batch(_) -> dict:
    items = [{"input_values": w, "label": label, "id": f"u{i}"}
             for i, (w, label) in enumerate(zip(_waveforms(), ["up", "down", "go"]))]
    return ClassificationCollator(LABELS)(items)


def _diarization_batch(_) -> dict:
    rng = np.random.default_rng(0)
    items = [{"input_values": w, "labels": (rng.random((len(w) // 320, 2)) < 0.5).astype(np.float32), "start": 0,
              "id": f"r{i}"} for i, w in enumerate(_waveforms())]
    return DiarizationCollator()(items)


@dataclass
class Task:
    model: Callable[[object], ArmHubertPreTrainedModel]  # CTC tokenizer -> model
    batch: Callable[[object], dict]  # CTC tokenizer -> the collator's batch
    trainer_class: type[SplitScoringTrainer]
    trainer_kwargs: dict = field(default_factory=dict)

    def trainer(self, model: ArmHubertPreTrainedModel, output_dir) -> SplitScoringTrainer:
        """The task's Trainer (which moves the model to its device)."""
        args = TrainingArguments(str(output_dir), report_to="none", dataloader_pin_memory=False)
        return self.trainer_class(model=model, args=args, **self.trainer_kwargs)


def _ctc_config(tokenizer, **overrides):
    return tiny_config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **overrides)


CTC_TRAINER = dict(wer_metric="wer", cer_metric="cer", slot_filling_metric="slot")
TASKS = {
    # SUPERB's ASR head: SpecAugment on the weighted sum, two BiLSTM layers with dropout.
    "superb-ctc": Task(lambda tok: ArmHubertForSuperbCTC(_ctc_config(
        tok, superb_projection_dim=16, superb_lstm_hidden_size=8, superb_lstm_layers=2, superb_lstm_dropout=0.2,
        superb_spec_augment=True)), _ctc_batch, CtcTrainer, CTC_TRAINER),
    "ctc": Task(lambda tok: ArmHubertForCTC(_ctc_config(tok, **STUDENT_SPEC_AUGMENT)), _ctc_batch, CtcTrainer,
                CTC_TRAINER),
    "classification-superb": Task(
        lambda _: ArmHubertForSequenceClassification(tiny_config(num_labels=3, classifier_proj_size=16,
                                                                 classifier_mode="superb")),
        _classification_batch, ClassificationTrainer, dict(label_set=LABELS)),
    "classification-fine-tune": Task(
        lambda _: ArmHubertForSequenceClassification(tiny_config(num_labels=3, classifier_proj_size=16,
                                                                 classifier_mode="fine_tune", **STUDENT_SPEC_AUGMENT)),
        _classification_batch, ClassificationTrainer, dict(label_set=LABELS)),
    "xvector": Task(lambda _: ArmHubertForXVector(tiny_config(num_labels=3)), _classification_batch,
                    SpeakerVerificationTrainer),
    "diarization": Task(lambda _: ArmHubertForSuperbDiarization(tiny_config(num_labels=2)), _diarization_batch,
                        DiarizationTrainer, dict(thresholds=[0.5], medians=[1])),
}


def ctc_tokenizer(folder) -> object:
    """A character CTC tokenizer for the CTC tasks' transcripts, its vocab.json written to `folder`."""
    return create_tokenizer(build_vocabulary(["THE WORK OF ART"]), folder)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return ctc_tokenizer(tmp_path_factory.mktemp("vocab"))


def task_model_and_batch(name: str, tokenizer) -> tuple[ArmHubertPreTrainedModel, dict]:
    torch.manual_seed(0)
    task = TASKS[name]
    return task.model(tokenizer), task.batch(tokenizer)


@pytest.mark.parametrize("name", TASKS)
def test_a_training_step_reads_nothing_back_and_eager_inference_still_checks(name, tokenizer, tmp_path):
    model, batch = task_model_and_batch(name, tokenizer)
    trainer = TASKS[name].trainer(model, tmp_path)
    model.to(DEVICE).train()
    inputs = to_device(batch, DEVICE)
    with _device_traffic() as blocking_uploads:
        trainer.compute_loss(model, inputs).backward()
    assert blocking_uploads == []
    assert any(param.grad is not None for param in model.parameters())
    # The control: eager inference reads the batch back for its input checks, and the harness sees it.
    inputs = to_device(batch, DEVICE)
    with _device_traffic(), torch.no_grad(), pytest.raises(AssertionError, match="back to the host"):
        model.eval()(input_values=inputs["input_values"], attention_mask=inputs["attention_mask"])


@pytest.mark.parametrize("name", TASKS)
def test_the_host_lengths_change_no_result(name, tokenizer):
    """Two seeded training steps (SpecAugment's draws, dropout) give the same losses, outputs and gradients,
    bit for bit, with the collator's host lengths as when the model reads the lengths back itself."""
    model, batch = task_model_and_batch(name, tokenizer)
    inputs = {key: batch[key] for key in ("input_values", "attention_mask", "labels")}
    host_lengths = {key: batch[key] for key in TASKS[name].trainer_class.host_length_inputs}
    runs = []
    for extra in ({}, host_lengths):
        torch.manual_seed(1)
        steps = []
        for _ in range(2):
            model.zero_grad()
            out = model.train()(**inputs, **extra)
            out.loss.backward()
            steps.append([out.loss, out.logits, *(p.grad for p in model.parameters() if p.grad is not None)])
        runs.append([[t.detach().clone() for t in step] for step in steps])
    read_back, given = runs
    for want, got in zip(read_back, given):
        assert len(got) == len(want) > 2
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=0, atol=0)


def test_bad_input_still_raises_on_eager_inference(tokenizer):
    torch.manual_seed(0)
    values, mask = torch.randn(2, 20000), torch.ones(2, 20000, dtype=torch.long)
    mask[1, 15000:] = 0
    ctc = ArmHubertForCTC(_ctc_config(tokenizer)).eval()
    with pytest.raises(ValueError, match=rf"Label ids must be < vocab_size \({len(tokenizer)}\), got 99"):
        ctc(values, attention_mask=mask, labels=torch.tensor([[3, 99], [4, -100]]))
    with pytest.raises(ValueError, match=r"input_lengths \[20000, 14000\] are not the real samples"):
        ctc(values, attention_mask=mask, labels=torch.tensor([[3, 4], [4, -100]]), input_lengths=[20000, 14000],
            label_lengths=[2, 1])
    with pytest.raises(ValueError, match=r"label_lengths \[2, 2\] are not the label counts"):
        ctc(values, attention_mask=mask, labels=torch.tensor([[3, 4], [4, -100]]), input_lengths=[20000, 15000],
            label_lengths=[2, 2])
    superb_ctc = ArmHubertForSuperbCTC(_ctc_config(tokenizer, superb_projection_dim=16,
                                                   superb_lstm_hidden_size=8)).eval()
    with pytest.raises(ValueError, match="Label ids must be < vocab_size"):
        superb_ctc(values, attention_mask=mask, labels=torch.tensor([[3, 99], [4, -100]]))
    classifier = ArmHubertForSequenceClassification(tiny_config(num_labels=3, classifier_proj_size=16,
                                                                classifier_mode="superb")).eval()
    with pytest.raises(ValueError, match=r"Labels of slot 'label' must be in \[0, 3\), got \[0, 3\]"):
        classifier(values, attention_mask=mask, labels=torch.tensor([0, 3]))


@pytest.mark.parametrize("train", [False, True], ids=["inference", "training-with-host-lengths"])
def test_too_short_audio_is_refused_with_the_same_message(train):
    """On eager inference, and in training too when the collator's host lengths make the check free."""
    torch.manual_seed(0)
    values, mask = torch.randn(2, 20000), torch.ones(2, 20000, dtype=torch.long)
    mask[1, 3000:] = 0  # 9 frames: fewer than the x-vector head's 16
    kwargs = dict(attention_mask=mask, input_lengths=[20000, 3000]) if train else dict(attention_mask=mask)
    xvector = ArmHubertForXVector(tiny_config(num_labels=3)).train(train)
    with pytest.raises(ValueError, match="An utterance of 3000 samples is too short for the x-vector head: it needs "
                                         "16 frames"):
        xvector(values, labels=torch.tensor([0, 1]), **kwargs)
    mask[1, 300:] = 0  # shorter than one frame of the conv encoder
    kwargs = dict(attention_mask=mask, input_lengths=[20000, 300]) if train else dict(attention_mask=mask)
    diarization = ArmHubertForSuperbDiarization(tiny_config(num_labels=2)).train(train)
    field = diarization.config.receptive_field
    with pytest.raises(ValueError, match=rf"Every item needs at least {field} samples .*; got \[20000, 300\]"):
        diarization(values, **kwargs)

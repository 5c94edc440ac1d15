"""`MaskingDistillationTrainer`: a Transformers Trainer whose step is one distillation step, masking
distillation (default) or STaR (`--objective star`).

Per batch (docs/method.md §2): a span mask over the frames (drawn by the collator in the DataLoader
workers, `DistillationMasker`), the frozen teacher's layer outputs unmasked and masked
(`teacher.FrozenTeacher`), one student pass with the same mask, and
`distillation_loss.masking_distillation_loss`. Evaluation reports the unmasked validation loss.
Under STaR (docs/method.md §5) the collator draws no mask: teacher and student see the same unmasked
audio and `temporal_relation_loss.star_loss` compares their layers' temporal Gram matrices, in
training and in evaluation alike.
Everything else (optimiser, schedule, mixed precision, checkpoints, resuming, several processes
through accelerate, pushing to the Hub) is the Trainer's own.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from modeling_armhubert import compute_span_mask, conv_output_lengths, frame_attention_mask

from .distillation_loss import masking_distillation_loss, validation_distillation_loss
from .speech_trainer import SpeechTrainer
from .teacher import FrozenTeacher
from .temporal_relation_loss import star_loss

LOSS_TERMS = ("mask_hint", "unmask_hint", "mask_rec", "unmask_rec")
STAR_LOSS_TERMS = ("tgm_layerwise", "tgm_intra")


@dataclass
class DistillationArguments:
    """How the student learns from the teacher (docs/method.md §2, §3 and §5)."""

    objective: Literal["masking", "star"] = field(default="masking", metadata={
        "help": "'masking': Recycle-and-Distill's masking distillation (the mask_* and hint/last/loss_type options); "
                "'star': STaR's temporal Gram matrix losses on unmasked input, no heads (the star_* options)."})
    mask_prob: float = field(default=0.8, metadata={
        "help": "Span mask probability: 0.8 in the paper's 960 h recipes, 0.4 in the 100 h ones."})
    mask_length: int = field(default=10, metadata={"help": "Mean span length in frames (20 ms each)."})
    mask_length_distribution: Literal["uniform", "static"] = field(default="uniform", metadata={
        "help": "Span lengths: 'uniform' integers in [0, 2 * mask_length] (the paper) or 'static' = mask_length."})
    mask_min_space: int = field(default=1, metadata={"help": "Unmasked frames kept between two spans."})
    mask_min_spans: int = field(default=2, metadata={"help": "At least this many spans per utterance."})
    hint_weight: float = field(default=0.1, metadata={"help": "Weight of the hint layers (all but the last)."})
    last_weight: float = field(default=1.0, metadata={"help": "Weight of the last layer."})
    loss_type: Literal["mse", "l1"] = field(default="mse", metadata={"help": "Per-frame distance: 'mse' or 'l1'."})
    star_terms: Literal["both", "layerwise", "intra"] = field(default="both", metadata={
        "help": "STaR terms: 'both' (the paper's objective), 'layerwise' or 'intra' (Gram between consecutive "
                "layers)."})
    star_normalisation: Literal["cosine", "width", "none"] = field(default="cosine", metadata={
        "help": "Features before the Gram: 'cosine' = each frame L2-normalised (widths compare), 'width' = Gram / "
                "channels, 'none' = raw. Not published; the default is this project's (docs/method.md §5)."})
    star_chunk_frames: int = field(default=1024, metadata={
        "help": "Rows of a Gram difference made at a time (and recomputed in the backward pass): bounds memory on "
                "long utterances."})
    share_teacher_features: bool = field(default=True, metadata={
        "help": "Run the teacher's conv feature encoder once for the masked and unmasked passes (faster, same "
                "result); false runs the whole teacher twice."})
    teacher_positional_conv_from_spectra: bool = field(default=True, metadata={
        "help": "Compute the teacher's positional conv (128 taps) from spectra, in fp32 (faster, the same conv to "
                "fp32 rounding); false runs the teacher's own conv."})

    def __post_init__(self):
        # Checked here, before the teacher loads and the corpus is indexed; the mask is first drawn in a
        # DataLoader worker, where a bad value would surface late and far from its option.
        if not 0.0 <= self.mask_prob <= 1.0:
            raise ValueError(f"--mask_prob must be in [0, 1]; got {self.mask_prob}.")
        for name, smallest in (("mask_length", 1), ("mask_min_space", 0), ("mask_min_spans", 0),
                               ("star_chunk_frames", 1)):
            if getattr(self, name) < smallest:
                raise ValueError(f"--{name} must be >= {smallest}; got {getattr(self, name)}.")
        for name in ("hint_weight", "last_weight"):
            if not 0.0 <= getattr(self, name) < float("inf"):
                raise ValueError(f"--{name} must be a finite weight >= 0; got {getattr(self, name)}.")

    @property
    def star_loss_terms(self) -> tuple[str, ...]:
        """The `temporal_relation_loss.star_loss` terms that --star_terms selects."""
        return ("layerwise", "intra") if self.star_terms == "both" else (self.star_terms,)


def distillation_mask(args: DistillationArguments, frame_mask: torch.Tensor,
                      generator: torch.Generator) -> torch.Tensor:
    """The span mask of one batch (docs/method.md §3) over its real frames: frame_mask (B, T) -> (B, T) bool."""
    return compute_span_mask(
        tuple(frame_mask.shape), args.mask_prob, args.mask_length, attention_mask=frame_mask.cpu(),
        length_distribution=args.mask_length_distribution, min_masks=args.mask_min_spans, no_overlap=True,
        min_space=args.mask_min_space, generator=generator,
    ).to(frame_mask.device)


def mask_generator(seed: int, epoch: int, utterance_ids: Sequence[str]) -> torch.Generator:
    """A generator seeded by the run seed, the epoch and the utterances of the batch (docs/method.md §3).

    Masks then depend only on what is being trained on, not on RNG history or on which process collates
    the batch: a resumed run and a run split over several processes draw exactly the masks an
    uninterrupted single process would. (An utterance occurs once per epoch, so no two batches of a
    run share a seed.)
    """
    digest = hashlib.sha256(f"{seed}|{epoch}|{'|'.join(utterance_ids)}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


@dataclass(frozen=True)
class DistillationMasker:
    """Draws a training batch's span mask in the collator (`AudioCollator(span_mask=...)`), i.e. in the
    DataLoader workers, so that the training step does not wait for the Python loops of `compute_span_mask`.

    The mask lies over the frames the student makes of the padded batch, on real frames only, and is
    seeded by `mask_generator(seed, epoch, utterance ids)`.

    Args:
        args: the mask settings (mask_prob, mask_length, mask_length_distribution, mask_min_spans,
            mask_min_space); the loss settings are not used here.
        seed: the run seed (TrainingArguments.seed).
        conv_kernel, conv_stride: the student's conv feature encoder (its config's fields).
    """

    args: DistillationArguments
    seed: int
    conv_kernel: tuple[int, ...]
    conv_stride: tuple[int, ...]

    @classmethod
    def for_student(cls, args: DistillationArguments, student_config: Any, seed: int) -> "DistillationMasker":
        return cls(args, int(seed), tuple(student_config.conv_kernel), tuple(student_config.conv_stride))

    def frame_mask(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """Sample-level attention_mask (B, S) -> bool (B, T) of real frames, as the student computes it."""
        frames = int(conv_output_lengths(attention_mask.shape[1], self.conv_kernel, self.conv_stride))
        return frame_attention_mask(max(frames, 0), attention_mask, self.conv_kernel, self.conv_stride)

    def __call__(self, attention_mask: torch.Tensor, utterance_ids: Sequence[str], epoch: int) -> torch.Tensor:
        """attention_mask (B, S) of the padded batch -> bool (B, T): True = masked frame."""
        if len(utterance_ids) != attention_mask.shape[0]:
            raise ValueError(f"{len(utterance_ids)} utterance ids for a batch of {attention_mask.shape[0]}.")
        return distillation_mask(self.args, self.frame_mask(attention_mask),
                                 mask_generator(self.seed, epoch, list(utterance_ids)))


class MaskingDistillationTrainer(SpeechTrainer):
    """Trainer for masking distillation or STaR. `model` is the student (an `ArmHubertModel`; with heads for
    masking distillation, whose heads STaR leaves unused).

    Args:
        teacher: the frozen teacher, returning the layers the student's heads are matched to.
        distillation_args: mask and loss settings.
        All other arguments are those of `SpeechTrainer` and the Trainer.
    """

    def __init__(self, *args, teacher: FrozenTeacher, distillation_args: DistillationArguments, **kwargs):
        super().__init__(*args, **kwargs)
        self.teacher = teacher.to(self.args.device)
        self.distillation_args = distillation_args
        student_config = self.accelerator.unwrap_model(self.model).config
        if len(teacher.layers) != student_config.num_hidden_layers:
            raise ValueError(f"The layer map names {len(teacher.layers)} teacher layers for a student of "
                             f"{student_config.num_hidden_layers} layers; give one teacher layer per student layer.")
        self.loss_terms = STAR_LOSS_TERMS if distillation_args.objective == "star" else LOSS_TERMS
        self._term_sums = {name: torch.zeros((), device=self.args.device) for name in self.loss_terms}
        self._term_count = 0
        if distillation_args.objective == "star":
            return  # Grams compare any widths, and no mask is drawn
        if not student_config.has_projection_heads:
            raise ValueError("The student has no distillation heads: set projection_dim to the teacher's hidden size.")
        if student_config.projection_dim != teacher.hidden_size:
            raise ValueError(f"Student heads map to {student_config.projection_dim} dims but the teacher's hidden "
                             f"size is {teacher.hidden_size}; set projection_dim={teacher.hidden_size}.")
        self._check_collator(student_config)

    def _check_collator(self, student_config) -> None:
        """Training batches must come with their span mask, drawn by the collator with this run's settings."""
        if self.train_dataset is None:
            return
        masker = getattr(self.data_collator, "span_mask", None)
        expected = DistillationMasker.for_student(self.distillation_args, student_config, self.args.seed)
        if masker is None:
            raise ValueError("The data collator draws no span mask: pass data_collator=AudioCollator(span_mask="
                             "DistillationMasker.for_student(distillation_args, student.config, training_args.seed)).")
        if masker != expected:
            raise ValueError(f"The collator's span mask settings {masker} differ from this run's {expected}: build "
                             "it from the same DistillationArguments, student config and seed.")

    # -- evaluation batches carry no mask (docs/method.md §2, step 6) -----------------------------

    def _without_mask(self, build, *args, **kwargs):
        collator = self.data_collator
        if getattr(collator, "span_mask", None) is None:
            return build(*args, **kwargs)
        self.data_collator = dataclasses.replace(collator, span_mask=None)
        try:
            return build(*args, **kwargs)
        finally:
            self.data_collator = collator

    def get_eval_dataloader(self, eval_dataset=None):
        return self._without_mask(super().get_eval_dataloader, eval_dataset)

    def get_test_dataloader(self, test_dataset):
        return self._without_mask(super().get_test_dataloader, test_dataset)

    # -- the step -----------------------------------------------------------------------------

    def _student_frame_mask(self, model, inputs: dict[str, Any]) -> tuple[torch.Tensor, int]:
        """(B, T) bool of real frames, and T."""
        student = self.accelerator.unwrap_model(model)
        frames = int(student._get_feat_extract_output_lengths(inputs["input_values"].shape[1]))
        frame_mask = student._get_feature_vector_attention_mask(frames, inputs["attention_mask"])
        return frame_mask, frames

    def pop_bookkeeping(self, inputs: dict[str, Any]) -> None:
        inputs.pop("text", None), inputs.pop("id", None)

    @staticmethod
    def batch_mask(inputs: dict[str, Any], frame_mask: torch.Tensor) -> torch.Tensor:
        """The span mask the collator drew for this batch, (B, T) bool, checked against the student's frames.

        This is all the training step spends on the mask: it was drawn in a DataLoader worker.
        """
        mask = inputs.pop("mask_time_indices", None)
        if mask is None:
            raise ValueError("This training batch carries no span mask ('mask_time_indices'): the collator must be "
                             "an AudioCollator with span_mask=DistillationMasker.for_student(...).")
        if mask.shape != frame_mask.shape:
            raise ValueError(f"The collator's span mask has shape {tuple(mask.shape)} but the student makes "
                             f"{tuple(frame_mask.shape)} frames of this batch: the DistillationMasker's conv_kernel "
                             "and conv_stride must be the student's.")
        return mask.to(frame_mask.device, torch.bool)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        self.count_skipped(inputs)
        self.pop_bookkeeping(inputs)
        empty = self.is_empty(inputs)
        if empty:  # no file of this batch could be read: a zero loss through the same forward
            inputs = self.stand_in_batch()
        if self.distillation_args.objective == "star":
            inputs.pop("mask_time_indices", None)  # STaR is unmasked
            terms, outputs = self._star_terms(model, inputs)
        else:
            terms, outputs = self._masking_terms(model, inputs)
        if empty:
            loss, outputs = terms["loss"] * 0.0, None
        else:
            self._accumulate(terms)
            loss = terms["loss"]
        return (loss, outputs) if return_outputs else loss

    def _masking_terms(self, model, inputs: dict[str, Any]) -> tuple[dict[str, torch.Tensor], Any]:
        """Masking distillation (docs/method.md §2): the student on masked audio against both teacher passes."""
        args = self.distillation_args
        values, attention_mask = inputs["input_values"], inputs["attention_mask"]
        frame_mask, frames = self._student_frame_mask(model, inputs)
        mask = self.batch_mask(inputs, frame_mask)

        with self.accelerator.autocast():
            teacher_unmasked, teacher_masked = self.teacher(values, attention_mask, mask)
        if teacher_unmasked[0].shape[1] != frames:
            raise ValueError(f"Teacher gives {teacher_unmasked[0].shape[1]} frames, student {frames}: their conv "
                             "encoders must have the same total stride and receptive field.")
        outputs = model(values, attention_mask=attention_mask, mask_time_indices=mask, output_hidden_states=True)
        terms = masking_distillation_loss(list(outputs.projected_hidden_states), teacher_unmasked, teacher_masked,
                                          mask, frame_mask, hint_weight=args.hint_weight,
                                          last_weight=args.last_weight, loss_type=args.loss_type)
        return terms, outputs

    def _star_terms(self, model, inputs: dict[str, Any]) -> tuple[dict[str, torch.Tensor], Any]:
        """STaR on unmasked audio (docs/method.md §5): each student layer's output against its teacher layer."""
        args = self.distillation_args
        values, attention_mask = inputs["input_values"], inputs["attention_mask"]
        frame_mask, frames = self._student_frame_mask(model, inputs)
        with self.accelerator.autocast():
            teacher_layers, _ = self.teacher(values, attention_mask, None)
        if teacher_layers[0].shape[1] != frames:
            raise ValueError(f"Teacher gives {teacher_layers[0].shape[1]} frames, student {frames}: their conv "
                             "encoders must have the same total stride and receptive field.")
        outputs = model(values, attention_mask=attention_mask, output_hidden_states=True)
        terms = star_loss(list(outputs.hidden_states[1:]), teacher_layers, frame_mask, terms=args.star_loss_terms,
                          normalisation=args.star_normalisation, chunk_frames=args.star_chunk_frames)
        return terms, outputs

    def _accumulate(self, terms: dict[str, torch.Tensor]) -> None:
        for name in self.loss_terms:
            self._term_sums[name] += terms[name].detach()
        self._term_count += 1

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Validation: no masking, every real frame against the unmasked teacher (docs/method.md §2, step 6);
        under STaR the training objective itself, which is unmasked."""
        inputs = self._prepare_inputs(inputs)
        self.count_skipped(inputs, training=False)
        self.pop_bookkeeping(inputs)
        inputs.pop("mask_time_indices", None)  # validation is unmasked
        if self.is_empty(inputs):
            # A NaN loss rather than none: under several processes every one must join the gather of each
            # batch's loss. The Trainer leaves non-finite batch losses out of the mean with
            # --logging_nan_inf_filter (the default; without it, eval_loss becomes NaN).
            return torch.tensor(float("nan"), device=self.args.device), None, None
        args = self.distillation_args
        if args.objective == "star":
            with torch.no_grad():
                return self._star_terms(model, inputs)[0]["loss"].detach(), None, None
        frame_mask, _ = self._student_frame_mask(model, inputs)
        with torch.no_grad(), self.accelerator.autocast():
            teacher_unmasked, _ = self.teacher(inputs["input_values"], inputs["attention_mask"], None)
            outputs = model(inputs["input_values"], attention_mask=inputs["attention_mask"],
                            output_hidden_states=True)
            loss = validation_distillation_loss(list(outputs.projected_hidden_states), teacher_unmasked, frame_mask,
                                                hint_weight=args.hint_weight, last_weight=args.last_weight,
                                                loss_type=args.loss_type)
        return loss.detach(), None, None

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        # Training logs carry the mean of each loss term since the last log, over all processes (the Trainer
        # averages the loss over them too). Every process logs at the same steps, so all join the reduction,
        # also one whose batches since the last log had no readable file.
        if "loss" in logs:
            count = torch.tensor(float(self._term_count), device=self.args.device)
            *totals, count = self.accelerator.reduce(torch.stack([*self._term_sums.values(), count]), "sum").tolist()
            if count > 0:
                for name, total in zip(self.loss_terms, totals):
                    logs[name] = round(total / count, 6)
            for total in self._term_sums.values():
                total.zero_()
            self._term_count = 0
        super().log(logs, start_time)

"""SuperbSpecAugment: SUPERB's SpecAugment on the weighted-sum features of ArmHubertForSuperbCTC (train mode only)."""

from __future__ import annotations

import pytest
import torch

from conftest import bundled_waveforms, pad_batch, tiny_config
from modeling_armhubert import ArmHubertForSuperbCTC, SuperbSpecAugment


def spec_augment(**overrides) -> SuperbSpecAugment:
    """SUPERB's SpecAugment (warp 5, 4 channel bands < 50, 2 frame bands < 40) with `overrides`, in train mode."""
    return SuperbSpecAugment(tiny_config(superb_spec_augment=True, **overrides)).train()


def runs(flags: torch.Tensor) -> list[tuple[int, int]]:
    """(start, width) of every run of True in a 1-D bool tensor."""
    padded = torch.cat([torch.tensor([False]), flags, torch.tensor([False])]).int()
    edges = padded.diff()
    starts, ends = torch.nonzero(edges == 1).flatten(), torch.nonzero(edges == -1).flatten()
    return [(int(s), int(e - s)) for s, e in zip(starts, ends)]


def zeroed_channels_and_frames(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For (T, D) features that had no zeros: (channels zero in every frame (D,), frames zero in every channel (T,)),
    after checking that these full bands are all that was zeroed."""
    zero = out == 0
    channels, frames = zero.all(0), zero.all(1)
    assert torch.equal(zero, channels[None, :] | frames[:, None]), "zeros outside full channel/frame bands"
    return channels, frames


def test_default_is_off_and_sizes_are_superbs():
    config = tiny_config()
    assert config.superb_spec_augment is False
    assert ArmHubertForSuperbCTC(tiny_config(vocab_size=8)).spec_augment is None
    assert (config.superb_time_warp_window, config.superb_num_freq_masks, config.superb_freq_mask_width_limit,
            config.superb_num_time_masks, config.superb_time_mask_width_limit) == (5, 4, 50, 2, 40)


@pytest.mark.parametrize("bad, message", [
    (dict(superb_spec_augment=1), "superb_spec_augment"),
    (dict(superb_time_warp_window=-1), "superb_time_warp_window"),
    (dict(superb_num_freq_masks=-1), "superb_num_freq_masks"),
    (dict(superb_freq_mask_width_limit=0), "superb_freq_mask_width_limit"),
    (dict(superb_time_mask_width_limit=0), "superb_time_mask_width_limit"),
])
def test_bad_sizes_are_refused(bad, message):
    with pytest.raises((TypeError, ValueError), match=message):
        tiny_config(**bad)


@pytest.mark.parametrize("axis", ["freq", "time"])
def test_one_band_is_0_to_limit_minus_1_wide(axis):
    """One band per utterance, 2,000 utterances: every width of randint[0, limit) occurs, and no other."""
    torch.manual_seed(0)
    limit = 50 if axis == "freq" else 40
    other = "time" if axis == "freq" else "freq"
    augment = spec_augment(superb_time_warp_window=0, **{f"superb_num_{axis}_masks": 1,
                                                          f"superb_num_{other}_masks": 0})
    frames, channels = (3, 200) if axis == "freq" else (200, 3)
    features = torch.rand(2000, frames, channels) + 1.0
    out = augment(features, torch.full((2000,), frames))
    widths = []
    for item in out:
        zeroed_channels, zeroed_frames = zeroed_channels_and_frames(item)
        bands = runs(zeroed_channels if axis == "freq" else zeroed_frames)
        assert not (zeroed_frames if axis == "freq" else zeroed_channels).any()
        assert len(bands) <= 1
        widths.append(bands[0][1] if bands else 0)
    assert set(widths) == set(range(limit))


@pytest.mark.parametrize("axis, count, limit", [("freq", 4, 50), ("time", 2, 40)])
def test_superbs_band_counts_and_widths(axis, count, limit):
    """SUPERB's 4 channel bands (< 50 wide) and 2 frame bands (< 40 wide), on utterances wide enough that
    they rarely overlap: never more bands than that, and exactly that many in most utterances."""
    torch.manual_seed(0)
    other = "time" if axis == "freq" else "freq"
    augment = spec_augment(superb_time_warp_window=0, **{f"superb_num_{other}_masks": 0})
    frames, channels = (2, 2000) if axis == "freq" else (2000, 2)
    features = torch.rand(300, frames, channels) + 1.0
    out = augment(features, torch.full((300,), frames))
    counts = []
    for item in out:
        zeroed_channels, zeroed_frames = zeroed_channels_and_frames(item)
        bands = runs(zeroed_channels if axis == "freq" else zeroed_frames)
        assert len(bands) <= count
        # A run as wide as the limit or wider can only come from overlapping bands, which leaves fewer runs.
        assert len(bands) < count or all(width < limit for _, width in bands)
        assert sum(width for _, width in bands) <= count * (limit - 1)
        counts.append(len(bands))
    assert counts.count(count) > 0.7 * len(out)


def test_time_warp_moves_frames_keeps_the_shape_and_stays_within_the_window():
    torch.manual_seed(0)
    augment = spec_augment(superb_num_freq_masks=0, superb_num_time_masks=0)  # warp window 5 alone
    frames = 60
    ramp = torch.arange(frames, dtype=torch.float)[None, :, None].expand(200, frames, 3).contiguous()
    out = augment(ramp, torch.full((200,), frames))
    assert out.shape == ramp.shape
    # Every channel is warped the same way; a warped ramp stays a ramp from about 0 to about T - 1 ...
    torch.testing.assert_close(out, out[:, :, :1].expand_as(out))
    assert (out[:, 1:, 0] - out[:, :-1, 0] >= -1e-4).all()
    # ... whose frames move by at most the window, and do move in most utterances.
    shift = (out[:, :, 0] - ramp[:, :, 0]).abs().amax(1)
    assert (shift <= 5 + 1e-4).all() and (shift > 0.1).float().mean() > 0.8
    # Utterances of at most 2 x 5 frames are not warped.
    short = torch.randn(4, 10, 3)
    torch.testing.assert_close(augment(short, torch.full((4,), 10)), short, rtol=0, atol=0)


def test_eval_mode_changes_nothing_and_the_head_trains_through_it():
    torch.manual_seed(0)
    config = tiny_config(vocab_size=12, superb_projection_dim=16, superb_lstm_hidden_size=8, superb_lstm_dropout=0.0)
    plain = ArmHubertForSuperbCTC(config)
    augmented = ArmHubertForSuperbCTC(config.with_overrides(None, superb_spec_augment=True))
    augmented.load_state_dict(plain.state_dict())
    values, mask = pad_batch([waveform[:24000] for waveform in bundled_waveforms(count=2)])  # 1.5 s each
    labels = torch.tensor([[3, 4, 5, 6], [7, 8, -100, -100]])
    with torch.no_grad():
        plain_logits = plain.eval()(values, attention_mask=mask).logits
        torch.testing.assert_close(augmented.eval()(values, attention_mask=mask).logits, plain_logits, rtol=0, atol=0)
    # In train mode it changes the features, and gradients still reach the layer weights through it.
    augmented.train()
    loss = augmented(values, attention_mask=mask, labels=labels).loss
    loss.backward()
    assert augmented.featurizer.layer_weights.grad.abs().sum() > 0
    with torch.no_grad():
        assert not torch.allclose(augmented(values, attention_mask=mask).logits, plain_logits)
    features = torch.randn(2, 30, 8)
    assert spec_augment().eval()(features, torch.tensor([30, 20])) is features


def test_same_seed_same_output():
    augment = spec_augment()
    features = torch.rand(3, 120, 64) + 1.0
    lengths = torch.tensor([120, 90, 40])
    torch.manual_seed(1337)
    first = augment(features, lengths)
    torch.manual_seed(1337)
    torch.testing.assert_close(augment(features, lengths), first, rtol=0, atol=0)
    assert not torch.equal(augment(features, lengths), first)  # the generator moved on: new draws


def test_each_utterance_is_augmented_on_its_own_frames_whatever_the_padding():
    """Bands and warp stay within an utterance's real frames, its padding passes unchanged, and neither the
    padding nor the padded length of the batch changes any utterance's result."""
    augment = spec_augment()
    lengths = torch.tensor([120, 50, 80])
    torch.manual_seed(0)
    utterances = [torch.rand(int(n), 64) + 1.0 for n in lengths]

    def padded(total: int, fill: float) -> torch.Tensor:
        batch = torch.full((3, total, 64), fill)
        for i, utterance in enumerate(utterances):
            batch[i, : len(utterance)] = utterance
        return batch

    results = []
    for total, fill in [(120, 7.0), (200, -3.0)]:
        torch.manual_seed(42)
        batch = padded(total, fill)
        out = augment(batch, lengths)
        for i, n in enumerate(lengths.tolist()):
            assert (out[i, n:] == fill).all(), "padding changed"
            zeroed_channels, zeroed_frames = zeroed_channels_and_frames(out[i, :n])
            assert len(runs(zeroed_frames)) <= 2 and len(runs(zeroed_channels)) <= 4
        results.append(out)
    for i, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(results[1][i, :n], results[0][i, :n], rtol=0, atol=0)

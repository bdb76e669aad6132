"""The image front end: width-to-length arithmetic against the convolutions it runs, each output frame's columns,
padding invariance, pixel statistics against torch's, and its place in front of the speech encoders."""

from __future__ import annotations

import pytest
import torch

from transduce.models.ctc import CTCModelConfig, build_ctc
from transduce.nn.image_frontend import WIDTH_LAYOUTS, ImageFrontend, image_stats


@pytest.mark.parametrize("factor", sorted(WIDTH_LAYOUTS))
def test_output_lengths_match_the_convolutions(factor: int) -> None:
    torch.manual_seed(0)
    front = ImageFrontend(32, 16, factor=factor, channels=8)
    widths = list(range(front.receptive_field, front.receptive_field + 3 * factor + 2)) + [97, 256, 1001]
    for width in widths:
        out = front(torch.rand(1, width, 32))
        assert out.shape == (1, int(front.output_lengths(torch.tensor([width]))), 16), width
    narrow = front.output_lengths(torch.tensor([0, 1, front.receptive_field - 1, front.receptive_field]))
    assert narrow.tolist() == [0, 0, 0, 1]
    long = int(front.output_lengths(torch.tensor([4000])))
    assert 4000 / factor - front.receptive_field / factor - 1 <= long <= 4000 / factor  # about W / factor


@pytest.mark.parametrize("factor", sorted(WIDTH_LAYOUTS))
def test_output_frame_reads_exactly_its_columns(factor: int) -> None:
    """Frame t depends on columns [t * factor, t * factor + receptive_field) and on no other (gradient check)."""
    torch.manual_seed(0)
    front = ImageFrontend(32, 8, factor=factor, channels=8)
    x = torch.rand(1, 120, 32, requires_grad=True)
    out = front(x)
    for t in (0, 3, out.size(1) - 1):
        (grad,) = torch.autograd.grad(out[0, t].sum(), x, retain_graph=True)
        touched = grad[0].abs().sum(1).nonzero().flatten().tolist()
        assert touched == list(range(t * factor, t * factor + front.receptive_field)), t


def test_padding_never_changes_valid_outputs() -> None:
    torch.manual_seed(0)
    front = ImageFrontend(32, 16, channels=8)
    images = [torch.rand(w, 32) for w in (40, 113, 77)]
    batch = torch.rand(3, 150, 32) * 5  # junk where padding goes
    for i, image in enumerate(images):
        batch[i, : image.size(0)] = image
    seq, lens = front.encode(batch, torch.tensor([x.size(0) for x in images]))
    for i, image in enumerate(images):
        alone, alone_lens = front.encode(image[None], torch.tensor([image.size(0)]))
        assert int(lens[i]) == int(alone_lens[0]) == alone.size(1)
        torch.testing.assert_close(seq[i, : lens[i]], alone[0], rtol=1e-5, atol=1e-5)
        assert seq[i, lens[i]:].abs().sum() == 0  # zeros past the length


def test_pixel_statistics_and_their_storage() -> None:
    images = [torch.rand(w, 32) * s for w, s in ((20, 1.0), (55, 0.5), (9, 0.9))]
    mean, std = image_stats(images)
    pixels = torch.cat([x.flatten() for x in images]).double()
    assert mean == pytest.approx(float(pixels.mean()), rel=1e-9)
    assert std == pytest.approx(float(pixels.std(unbiased=False)), rel=1e-9)
    front = ImageFrontend(32, 16, channels=8)
    front.set_stats(mean, std)
    copy = ImageFrontend(32, 16, channels=8)
    copy.load_state_dict(front.state_dict())  # the statistics travel with the weights
    assert float(copy.mean) == pytest.approx(mean) and float(copy.std) == pytest.approx(std)
    x = torch.rand(1, 50, 32)
    torch.testing.assert_close(copy(x), front(x))
    with pytest.raises(ValueError, match="no pixels"):
        image_stats([])


def test_bad_sizes_are_clear_errors() -> None:
    front = ImageFrontend(32, 16, channels=8)
    with pytest.raises(ValueError, match="24 pixels high, the front end takes 32"):
        front(torch.rand(1, 50, 24))
    with pytest.raises(ValueError, match="fewer than the receptive field"):
        front(torch.rand(1, 3, 32))
    with pytest.raises(ValueError, match="width factor must be one of"):
        ImageFrontend(32, 16, factor=6)


@pytest.mark.parametrize("encoder", ["conformer", "transformer"])
def test_speech_encoders_take_it_in_place_of_subsampling(encoder: str) -> None:
    torch.manual_seed(0)
    cfg = CTCModelConfig(encoder=encoder, input_dim=32, dim=16, heads=2, layers=1, ffn_dim=32, kernel_size=3,
                         dropout=0.0)
    front = ImageFrontend(32, 16, channels=8)
    model = build_ctc(cfg, 10, front_end=front).eval()
    assert model.encoder.subsampling is front
    images, widths = torch.rand(2, 90, 32), torch.tensor([90, 61])
    log_probs, lens = model(images, widths)
    assert lens.tolist() == front.output_lengths(widths).tolist() and log_probs.shape[:2] == (2, int(lens[0]))
    alone, _ = model(images[1:, :61], widths[1:])
    torch.testing.assert_close(log_probs[1, : lens[1]], alone[0], rtol=1e-4, atol=1e-4)

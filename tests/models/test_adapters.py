"""Modality adapters of the unified model: the Z-score normalization against ``F.batch_norm`` on the real frames,
the shared layers seeing one width and dtype from every modality, padding invariance per modality, the stored
statistics, and the front ends' shape arithmetic."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from transduce.models.unified import UnifiedModel, UnifiedModelConfig, build_unified
from transduce.nn.subsampling import conv_lengths
from transduce.nn.zscore import ZScore

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**overrides: object) -> UnifiedModelConfig:
    overrides = {"inputs": ("speech", "text", "image"), **overrides}
    return UnifiedModelConfig(input_dim=40, image_height=16, image_dim=20, dim=32, heads=2, layers=2, ffn_dim=64,
                              kernel_size=5, subsampling=4, subsampling_channels=8, speech_dim=24, text_dim=16,
                              adapter_layers=1, adapter_bottleneck=8, dropout=0.0, decoder_layers=2,
                              **overrides)  # type: ignore[arg-type]


def inputs() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return {"speech": (torch.randn(3, 70, 40, generator=g), torch.tensor([70, 41, 23])),
            "text": (torch.randint(4, 30, (3, 9), generator=g), torch.tensor([9, 5, 2])),
            "image": (torch.rand(3, 50, 16, generator=g), torch.tensor([50, 33, 4]))}  # 4 < receptive field


def test_zscore_equals_batch_norm_over_the_real_frames() -> None:
    g = torch.Generator().manual_seed(1)
    x, real = torch.randn(2, 6, 5, generator=g) * 3 + 1, torch.tensor([[1] * 6, [1] * 4 + [0] * 2]).bool()
    x[1, 4:] = 100.0  # padding that must not count
    norm = ZScore(5, momentum=0.1)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 2, 5))
        norm.bias.copy_(torch.linspace(-1, 1, 5))
    flat = x[real]  # (real frames, 5)
    expected = F.batch_norm(flat, None, None, norm.weight, norm.bias, training=True, eps=1e-5)
    out = norm.train()(x, real)
    assert torch.allclose(out[real], expected, atol=1e-5)
    assert (out[~real] == 0).all()
    # the stored statistics move towards the real frames' mean and (biased) variance by the momentum
    assert torch.allclose(norm.mean, 0.1 * flat.mean(0), atol=1e-6)
    assert torch.allclose(norm.var, 0.9 + 0.1 * flat.var(0, unbiased=False), atol=1e-5)
    frozen = norm.eval()(x, real)
    reference = F.batch_norm(flat, norm.mean, norm.var, norm.weight, norm.bias, training=False, eps=1e-5)
    assert torch.allclose(frozen[real], reference, atol=1e-5)


def test_shared_layers_see_one_width_and_dtype_from_every_modality() -> None:
    model = build_unified(tiny(), 30, 2).eval()
    seen: list[tuple[int, torch.dtype]] = []
    model.encoder.blocks[0].register_forward_hook(lambda _m, args, _o: seen.append((args[0].size(-1), args[0].dtype)))
    for name, (x, lens) in inputs().items():
        h, _ = model.modality(name).encode(x, lens)
        assert h.size(-1) == 32, name
        model.encode(x, lens, modality=name)
    assert seen == [(32, torch.float32)] * 3
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for name, (x, lens) in inputs().items():
            model.encode(x, lens, modality=name)
    assert [dtype for _, dtype in seen[3:]] == [torch.bfloat16] * 3


def test_each_modality_is_padding_invariant() -> None:
    """In eval mode (stored statistics) each input encodes alone as in a padded batch."""
    model = build_unified(tiny(), 30, 2).eval()
    for name, (x, lens) in inputs().items():
        memory, out_lens = model.encode(x, lens, modality=name)
        for b in range(x.size(0)):
            alone, alone_lens = model.encode(x[b: b + 1, : int(lens[b])], lens[b: b + 1], modality=name)
            n = int(out_lens[b])
            assert int(alone_lens) == n
            assert torch.allclose(memory[b, :n], alone[0, :n], atol=1e-5), (name, b)
            assert (memory[b, n:] == 0).all()


def test_utterance_norm_removes_each_utterance_offset_and_keeps_padding_invariance() -> None:
    """model.utterance_norm (as the bundled captions recognizer): a constant added to one utterance's real frames
    changes nothing, and an utterance still encodes alone as in a padded batch."""
    model = build_unified(tiny(utterance_norm=True), 30, 2).eval()
    x, lens = inputs()["speech"]
    shifted = x.clone()
    shifted[1, : int(lens[1])] += torch.linspace(-3.0, 5.0, 40)  # one offset per bin, on the real frames only
    memory, out_lens = model.encode(x, lens, modality="speech")
    assert torch.allclose(model.encode(shifted, lens, modality="speech")[0], memory, atol=1e-4)
    alone, _ = model.encode(x[1:2, : int(lens[1])], lens[1:2], modality="speech")
    n = int(out_lens[1])
    assert torch.allclose(memory[1, :n], alone[0, :n], atol=1e-5)
    plain = build_unified(tiny(), 30, 2).eval()
    plain.load_state_dict(model.state_dict())
    assert not torch.allclose(plain.encode(shifted, lens, modality="speech")[0], memory, atol=1e-4)


def test_training_statistics_ignore_padding() -> None:
    """In training the adapters normalize with the batch's real frames: more padding changes nothing."""
    model = build_unified(tiny(), 30, 2).train()
    for name, (x, lens) in inputs().items():
        longer = F.pad(x, (0, 5)) if name == "text" else F.pad(x, (0, 0, 0, 7))
        a, _ = model.modality(name).encode(x, lens)
        b, _ = model.modality(name).encode(longer, lens)
        assert torch.allclose(a, b[:, : a.size(1)], atol=1e-5), name


def test_statistics_are_stored_with_the_model() -> None:
    model = build_unified(tiny(), 30, 2)
    names = set(model.state_dict())
    for name in ("speech", "text", "image"):
        assert {f"modalities.{name}.adapter.norm.mean", f"modalities.{name}.adapter.norm.var"} <= names
    assert "modalities.speech.front.normalizer.mean" in names  # the global CMVN of the features
    assert {"modalities.image.front.frontend.mean", "modalities.image.front.frontend.std"} <= names  # pixel stats


def test_front_end_lengths() -> None:
    model: UnifiedModel = build_unified(tiny(), 30, 2)
    (x, lens), (tokens, token_lens) = inputs()["speech"], inputs()["text"]
    h, out = model.modality("speech").front(x, lens)
    assert out.tolist() == [conv_lengths(int(n), [(3, 2), (3, 2)]) for n in lens] and h.shape[1:] == (16, 24)
    t, same = model.modality("text").front(tokens, token_lens)
    assert same.tolist() == token_lens.tolist() and t.shape == (3, 9, 16)
    images, widths = inputs()["image"]
    i, columns = model.modality("image").front(images, widths)
    assert columns.tolist() == [max(conv_lengths(int(n), [(3, 2), (3, 2), (3, 1)]), 0) for n in widths]
    assert i.shape[2] == 20 and columns[2] == 0 and (i[2] == 0).all()


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match=r"model.inputs: unknown \['video'\]"):
        build_unified(tiny(inputs=("speech", "video")), 30, 2)
    with pytest.raises(ValueError, match="model.train_only: unknown part 'decoder'"):
        build_unified(tiny(train_only=("decoder",)), 30, 2)
    with pytest.raises(ValueError, match="input 'text': this model takes speech"):
        build_unified(tiny(inputs=("speech",)), 30, 2).encode(*inputs()["text"], modality="text")
    with pytest.raises(ValueError, match="model.image_subsampling: one of"):
        build_unified(tiny(image_subsampling=6), 30, 2)

"""ONNX export of speech models against the PyTorch model it came from, computed inside each test: the offline
encoder on a batch of another size and mixed lengths, the streaming chunk graph chunk by chunk against
``forward_chunks`` and the chunk-masked full forward, transcripts through ``transcribe --model OUT`` (whole files
and --stream) against the source folder's, int8 quantization, the card, and one-line errors for missing files.

One tiny hybrid CTC/attention Conformer (causal, random weights with a fixed seed, real digits tokenizer and
CMVN statistics from real audio) is exported once for the module."""

from __future__ import annotations

import shutil
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest
import torch
import yaml
from testkit import run_cli

from transduce.data.audio import load_audio
from transduce.data.cmvn import CMVNStats, GlobalCMVN
from transduce.data.features import Fbank
from transduce.data.speech_batching import pad_features
from transduce.data.tokenizer import Tokenizer
from transduce.errors import ConfigError, UsageError
from transduce.export import export_model
from transduce.export.onnx import quantize_int8
from transduce.models.ctc import CTCModel, build_ctc, tied_aliases
from transduce.models.folder import write_model_folder
from transduce.recognize import Recognizer
from transduce.speech_config import fbank_config
from transduce.streaming.batch import StreamBatch
from transduce.streaming.endpoint import EndpointConfig
from transduce.streaming.stream import feed
from transduce.tasks import parse_config

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "models" / "digits-hybrid-streaming"
DIGITS = sorted((ROOT / "examples" / "digits").glob("*.wav"))[:3]
TINY = {"dim": 32, "heads": 4, "layers": 2, "ffn_dim": 64, "kernel_size": 5, "subsampling_channels": 8,
        "decoder_layers": 1, "reverse_decoder_layers": 0, "dropout": 0.0}


def tiny_folder(out: Path, **model: object) -> Path:
    """A model folder like the bundled streaming digits model, with a tiny random model (fixed seed)."""
    config = yaml.safe_load((SOURCE / "config.yaml").read_text())
    config["model"].update(TINY, **model)
    cfg = parse_config(config)
    fbank = Fbank(fbank_config(cfg.data))
    stats = CMVNStats(cfg.data.num_mel_bins)
    for path in DIGITS:
        stats.add(fbank(load_audio(path, cfg.data.sample_rate)))
    torch.manual_seed(3)
    tokenizer = Tokenizer(SOURCE / "spm.model")
    model_ = build_ctc(cfg.model, len(tokenizer), GlobalCMVN.from_stats(stats))
    with torch.no_grad():
        model_.head.bias[0] -= 2.0  # fewer blanks than chance, so random transcripts are not empty
    return write_model_folder(out, model_.state_dict(), config, [SOURCE / "spm.model"], {"updates": 0},
                              aliases=tied_aliases(cfg.model), readme="# tiny digits\n\nA test model.\n")


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("onnx")
    src = tiny_folder(base / "src")
    return src, export_model(src, "onnx", base / "out")


@pytest.fixture(scope="module")
def models(folders: tuple[Path, Path]) -> tuple[CTCModel, Recognizer]:
    src, out = folders
    exported = Recognizer.load(out)
    return Recognizer.load(src).model, exported


def features(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return pad_features([torch.randn(n, 80, generator=gen) * 3 - 5 for n in lengths])


def test_offline_encoder_matches_pytorch(folders: tuple[Path, Path], models: tuple[CTCModel, Recognizer]) -> None:
    model, exported = models
    feats, lens = features([131, 40, 77, 9, 5])  # 5 rows (exported with 2), one too short for any output frame
    with torch.no_grad():
        ref, ref_lens = model.encode(feats, lens)
        ref_log_probs = model.ctc_log_probs(ref)
    out, out_lens = exported.model.encode(feats, lens)
    assert torch.equal(out_lens, ref_lens)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=0)
    torch.testing.assert_close(exported.model.ctc_log_probs(out), ref_log_probs, atol=1e-4, rtol=0)
    session = ort.InferenceSession(str(folders[1] / "encoder.onnx"), providers=["CPUExecutionProvider"])
    log_probs, graph_lens, _ = session.run(None, {"feats": feats[:4].numpy(), "feat_lens": lens[:4].numpy()})
    for b in range(4):  # the graph alone: CTC log-probs on every real frame
        n = int(ref_lens[b])
        torch.testing.assert_close(torch.from_numpy(log_probs[b, :n]), ref_log_probs[b, :n], atol=1e-4, rtol=0)
    assert graph_lens.tolist() == ref_lens[:4].tolist()
    with torch.no_grad():  # chunked decoding of whole utterances runs the chunk graph (a row without any output too)
        ref, ref_lens = model.encode(feats, lens, chunk_size=4, left_chunks=2)
    out, out_lens = exported.model.encode(feats, lens, chunk_size=4, left_chunks=2)
    assert torch.equal(out_lens, ref_lens)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize(("chunk_size", "left_chunks"), [(2, -1), (3, -1), (4, 1), (16, 0)])
def test_chunks_match_forward_chunks_and_masked_forward(models: tuple[CTCModel, Recognizer], chunk_size: int,
                                                        left_chunks: int) -> None:
    """Three streams of different lengths fed in packets of different sizes and advanced together, one chunk per
    call, through the ONNX chunk graph and through ``forward_chunks``: equal outputs every call, and the
    concatenation equals the full forward with the chunk mask."""
    model, exported = models
    lengths, packets = [157, 61, 100], [23, 50, 9]
    feats, lens = features(lengths, seed=1)
    onnx_states = [exported.model.init_stream(1) for _ in lengths]
    torch_states = [model.init_stream(1) for _ in lengths]
    sent, pieces = [0, 0, 0], [[], [], []]  # type: tuple[list[int], list[list[torch.Tensor]]]
    for _ in range(200):
        news = [feats[b, sent[b] : min(sent[b] + packets[b], lengths[b])] for b in range(3)]
        sent = [s + n.size(0) for s, n in zip(sent, news, strict=True)]
        final = [s == n for s, n in zip(sent, lengths, strict=True)]
        out, out_lens, onnx_states = exported.model.forward_chunks(news, onnx_states, chunk_size=chunk_size,
                                                                   left_chunks=left_chunks, final=final)
        with torch.no_grad():
            ref, ref_lens, torch_states = model.forward_chunks(news, torch_states, chunk_size=chunk_size,
                                                               left_chunks=left_chunks, final=final)
        assert torch.equal(out_lens, ref_lens)
        torch.testing.assert_close(out, ref, atol=1e-4, rtol=0)
        for b in range(3):
            pieces[b].append(out[b, : int(out_lens[b])])
        if all(final) and int(out_lens.sum()) == 0:
            break
    with torch.no_grad():
        full, full_lens = model.encode(feats, lens, chunk_size=chunk_size, left_chunks=left_chunks)
    for b in range(3):
        streamed = torch.cat(pieces[b])
        assert streamed.size(0) == int(full_lens[b])
        torch.testing.assert_close(streamed, full[b, : int(full_lens[b])], atol=1e-4, rtol=0)
    chunked, chunked_lens = exported.model.encode(feats, lens, chunk_size=chunk_size, left_chunks=left_chunks)
    assert torch.equal(chunked_lens, full_lens)
    torch.testing.assert_close(chunked, full, atol=1e-4, rtol=0)


def test_transcribe_cli_matches_pytorch(folders: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    src, out = folders
    files = [str(p) for p in DIGITS]
    for extra in ([], ["--beam", "4"], ["--stream", "--chunk-ms", "320"]):
        code, ref, _ = run_cli(["transcribe", "--model", str(src), "--mode", "ctc", *extra, *files], capsys)
        assert code == 0
        code, got, err = run_cli(["transcribe", "--model", str(out), *extra, *files], capsys)
        assert code == 0, err
        assert got == ref
        assert any(line.split("\t")[-1].strip() for line in got.splitlines())  # not all empty


def test_folder_carries_card_metadata_and_ctc_search(folders: tuple[Path, Path]) -> None:
    src, out = folders
    card = (out / "README.md").read_text()
    assert "# ONNX export of src" in card and "A test model." in card and "mode rescore" in card
    info = yaml.safe_load((out / "export.yaml").read_text())
    assert info["format"] == "onnx" and info["quantize"] is None and info["source"] == str(src)
    assert yaml.safe_load((out / "config.yaml").read_text())["decode"]["mode"] == "ctc"
    assert yaml.safe_load((src / "config.yaml").read_text())["decode"]["mode"] == "rescore"
    meta = {p.key: p.value for p in onnx.load(str(out / "encoder_chunk.onnx")).metadata_props}
    assert (meta["subsampling"], meta["receptive_field"], meta["layers"], meta["causal"]) == ("4", "7", "2", "1")
    assert meta["chunk_size"] == "0" and meta["left_chunks"] == "-1" and meta["trained_max_chunk"] == "16"
    recognizer = Recognizer.load(out)
    with pytest.raises(ConfigError, match="decode.mode rescore needs an attention decoder"):
        recognizer.transcribe([str(DIGITS[0])], mode="rescore")


def test_missing_file_is_one_line_error(folders: tuple[Path, Path], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("encoder_chunk.onnx", "spm.model", "README.md"):
        broken = tmp_path / name
        shutil.copytree(folders[1], broken)
        (broken / name).unlink()
        with pytest.raises(FileNotFoundError, match=f"{broken}: exported folder without {name}"):
            Recognizer.load(broken)
        code, out, err = run_cli(["transcribe", "--model", str(broken), str(DIGITS[0])], capsys)
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and name in err


def test_int8_quantization(folders: tuple[Path, Path], models: tuple[CTCModel, Recognizer], tmp_path: Path) -> None:
    """The quantized graphs hold int8 weights and stay close to float32 (relative error of the encoder output)."""
    quantized = shutil.copytree(folders[1], tmp_path / "int8")
    for name in ("encoder.onnx", "encoder_chunk.onnx", "ctc.onnx"):
        quantize_int8(quantized / name)
        ops = {node.op_type for node in onnx.load(str(quantized / name)).graph.node}
        assert "DynamicQuantizeLinear" in ops or "MatMulInteger" in ops, name
    feats, lens = features([120, 64], seed=2)
    ref, _ = models[1].model.encode(feats, lens)
    out, _ = Recognizer.load(quantized).model.encode(feats, lens)
    assert float((out - ref).norm() / ref.norm()) < 0.1
    assert not torch.equal(out, ref)


def test_unsupported_requests_fail_in_one_line(tmp_path: Path) -> None:
    src = tiny_folder(tmp_path / "t", encoder="transformer", causal_conv=False, decoder_layers=0)
    with pytest.raises(ConfigError, match="model.encoder: transformer: the ONNX export covers the conformer"):
        export_model(src, "onnx", tmp_path / "out")
    with pytest.raises(UsageError, match="--quantize float16: onnx exports take int8"):
        export_model(src, "onnx", tmp_path / "out2", quantize="float16")
    assert not (tmp_path / "out2").exists()


def test_stream_batch_over_the_export_matches_pytorch_streams_alone(folders: tuple[Path, Path],
                                                                     models: tuple[CTCModel, Recognizer]) -> None:
    """Three streams joined at different rounds of one ``StreamBatch`` over the ONNX model, with endpointing, give
    the segments (texts and times) each stream gives alone through the PyTorch model."""
    pytorch, exported = Recognizer.load(folders[0]), models[1]
    waves = [load_audio(path, 16000) for path in DIGITS]
    endpoint = EndpointConfig(trailing_silence=0.3)
    expected = [[(s.text, s.start, s.end) for s in feed(pytorch.stream(160, mode="ctc", endpoint=endpoint), w, 160)]
                for w in waves]
    batch = StreamBatch(chunk_size=exported.chunk_frames(160))
    keys: list[int] = []
    got: dict[int, list[tuple[str, float, float]]] = {}
    for round_ in range(10_000):
        if round_ < len(waves) * 3 and round_ % 3 == 0:  # a new stream every third round, all its audio at once
            key = batch.add(exported.stream(160, endpoint=endpoint))
            batch.feed(key, waves[len(keys)])
            batch.finish(key)
            keys.append(key)
            got[key] = []
        for update in batch.step():
            got[update.key] += [(s.text, s.start, s.end) for s in update.segments]
        if len(keys) == len(waves) and all(batch.sessions[k].done for k in keys):
            break
    assert [got[k] for k in keys] == expected
    assert any(segments for segments in expected)

"""ONNX export of speech models (task ``ctc``: CTC Conformers, and the encoder + CTC head of hybrid CTC/attention
models), run by onnxruntime (``export/onnx_runtime.py``).

An exported folder holds, besides ``config.yaml`` (decode.mode set to ctc), ``spm.model``, ``README.md`` and
``export.yaml``:

    encoder.onnx        feats (B, T, F) float, feat_lens (B,) int64 -> log_probs (B, T', V), out_lens (B,),
                        encoder_out (B, T', D): the whole utterance at full context; dynamic B and T
    encoder_chunk.onnx  (streaming models) chunk (B, N, F), chunk_lens, offsets, cache_lens (B,), attn_keys and
                        attn_values (L, B, H, P, E), conv_cache (L, B, D, K - 1), chunk_size, left_chunks () ->
                        output (B, T', D), new_keys, new_values (L, B, H, P + T', E), new_conv_cache
    ctc.onnx            encoder_out (B, T', D) -> log_probs (B, T', V)

The graphs normalize raw log-mel features themselves (the model's CMVN is inside). Each graph's metadata carries
what a runtime needs to drive it (as WeNet's ``export_onnx_cpu.py`` and icefall's ``export-onnx-streaming.py``
store theirs): subsampling factor and receptive field, feature/model sizes, layers, heads, kernel, vocabulary,
the default and trained chunk sizes and left chunks. The attention decoders are not exported: the ONNX path
searches with CTC (prefix beam, LM fusion, endpointing), and says so in the card.
``--quantize int8``: onnxruntime dynamic quantization (int8 weights, activations quantized per call).

Dimension letters as in ``export/onnx_graphs.py``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import tempfile
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import torch
import yaml

from transduce.errors import ConfigError, UsageError

TASKS: tuple[str, ...] = ("ctc",)
QUANTIZE: tuple[str, ...] = ("int8",)
OFFLINE, CHUNK, HEAD = "encoder.onnx", "encoder_chunk.onnx", "ctc.onnx"
OPSET = 18


def _graph_file(graph: torch.nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str],
                dynamic: tuple, metadata: dict[str, str]) -> None:
    """Trace ``graph`` with the dynamo exporter into ``path``, with ``metadata`` in the model's properties."""
    import onnx

    exporter_log = logging.getLogger("torch.onnx")  # notes about operators of packages not installed
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the exporter reports progress on stdout and warns about internals
            program = torch.onnx.export(graph, args, None, input_names=inputs, output_names=outputs,
                                        dynamic_shapes=dynamic, dynamo=True, opset_version=OPSET, verbose=False)
    finally:
        exporter_log.setLevel(level)
    assert program is not None
    proto = program.model_proto
    onnx.helper.set_model_props(proto, metadata)
    onnx.save(proto, str(path))


def _metadata(model: Any, cfg: Any, why: str | None) -> dict[str, str]:
    enc = model.encoder
    facts = {
        "model_type": "transduce-ctc-conformer", "subsampling": enc.subsampling.factor,
        "receptive_field": enc.subsampling.receptive_field, "feature_dim": enc.input_dim, "dim": enc.dim,
        "heads": enc.heads, "layers": len(enc.blocks), "kernel_size": enc.kernel_size, "causal": int(enc.causal),
        "utterance_norm": int(model.utterance_norm), "vocab_size": model.head.out_features, "blank_id": 0,
        "sample_rate": cfg.data.sample_rate, "num_mel_bins": cfg.data.num_mel_bins,
        "chunk_size": cfg.decode.chunk_size, "left_chunks": cfg.decode.left_chunks,
        "trained_max_chunk": cfg.model.max_chunk if cfg.model.dynamic_chunk else 0,
        "unstreamable": why or "",
    }
    return {key: str(value) for key, value in facts.items()}


def export_graphs(model: Any, cfg: Any, out: Path) -> list[str]:
    """Write the ONNX graphs of ``model`` (a ``CTCModel`` in eval mode) into ``out``; returns their names."""
    from torch.export import Dim

    from transduce.export.onnx_graphs import ChunkGraph, HeadGraph, OfflineGraph
    from transduce.nn.conformer import ConformerEncoder
    from transduce.streaming.session import unstreamable

    if not isinstance(model.encoder, ConformerEncoder):
        raise ConfigError(f"model.encoder: {cfg.model.encoder}: the ONNX export covers the conformer encoder")
    why = unstreamable(model)
    meta = _metadata(model, cfg, why)
    enc, sub = model.encoder, model.encoder.subsampling
    batch, frames = Dim("B"), Dim("T", min=sub.receptive_field)
    feats = torch.randn(2, sub.receptive_field + 5 * sub.factor, enc.input_dim)
    _graph_file(OfflineGraph(model), (feats, torch.tensor([feats.size(1), feats.size(1) - sub.factor])),
                out / OFFLINE, ["feats", "feat_lens"], ["log_probs", "out_lens", "encoder_out"],
                ({0: batch, 1: frames}, {0: batch}), meta)
    _graph_file(HeadGraph(model), (torch.randn(2, 5, enc.dim),), out / HEAD, ["encoder_out"], ["log_probs"],
                ({0: batch, 1: Dim("T2")},), meta)
    if why is not None:
        return [OFFLINE, HEAD]
    layers, heads, e = len(enc.blocks), enc.heads, enc.dim // enc.heads
    size, past = 3, 6  # example chunk of 3 frames after 6 cached ones (sizes 0 and 1 would be specialized)
    chunk = torch.randn(2, (size - 1) * sub.factor + sub.receptive_field, enc.input_dim)
    lengths = torch.tensor([size, size])
    caches = (torch.randn(layers, 2, heads, past, e), torch.randn(layers, 2, heads, past, e),
              torch.randn(layers, 2, enc.dim, enc.kernel_size - 1))
    args = (chunk, lengths, torch.tensor([past, past]), torch.tensor([past, past - size]), *caches,
            torch.tensor(size), torch.tensor(-1))
    cache = {1: batch, 3: Dim("P", min=0)}
    _graph_file(ChunkGraph(model), args, out / CHUNK,
                ["chunk", "chunk_lens", "offsets", "cache_lens", "attn_keys", "attn_values", "conv_cache",
                 "chunk_size", "left_chunks"], ["output", "new_keys", "new_values", "new_conv_cache"],
                ({0: batch, 1: Dim("N", min=sub.receptive_field)}, {0: batch}, {0: batch}, {0: batch}, cache, cache,
                 {1: batch}, None, None), meta)
    return [OFFLINE, HEAD, CHUNK]


def quantize_int8(path: Path) -> None:
    """Replace the graph at ``path`` by its onnxruntime dynamic int8 quantization (MatMul/Gemm weights int8)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()  # the quantizer advises its shape pre-processing on the root logger; measured on
    level = root.level  # these graphs it changes nothing (and its symbolic shape inference fails on them)
    root.setLevel(logging.ERROR)
    try:
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            target = Path(tmp) / path.name
            quantize_dynamic(path, target, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
            os.replace(target, path)
    finally:
        root.setLevel(level)


def export(src: Path, out: Path, quantize: str | None) -> None:
    """The model folder ``src`` (task ``ctc``) as ONNX graphs in ``out`` (see the module docstring)."""
    from transduce.export import copy_model_files, write_export_info
    from transduce.recognize import Recognizer
    from transduce.tasks import build_loaded

    if quantize not in (None, *QUANTIZE):
        raise UsageError(f"--quantize {quantize}: onnx exports take {', '.join(QUANTIZE)}")
    model, cfg, folder = build_loaded(src, Recognizer, "the onnx export needs a speech model")
    out.mkdir(parents=True, exist_ok=True)
    copied = copy_model_files(folder.path, out)
    graphs = export_graphs(model, cfg, out)
    if quantize == "int8":
        for name in graphs:
            quantize_int8(out / name)
    decode = dict(vars(cfg.decode))
    copied += decode_files(folder.path, out, decode)
    config = yaml.safe_load((out / "config.yaml").read_text())
    config["decode"] = {**config.get("decode", {}), "mode": "ctc", "ensemble": []}  # decoders, partners: not exported
    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (out / "README.md").write_text(card(src, out, folder.readme, graphs, quantize, decode))
    write_export_info(out, {"format": "onnx", "quantize": quantize, "source": str(src), "search": "ctc",
                            "files": [*copied, *graphs]})


def decode_files(src: Path, out: Path, decode: dict[str, Any]) -> list[str]:
    """Copy the language model and lexicon the model's decode section names from its folder (they belong to the
    model, as ``Recognizer.load`` reads them); returns the names copied."""
    names = []
    for field in ("lm", "lexicon"):
        name = decode.get(field)
        if name and not Path(name).is_absolute() and (src / name).is_file():
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src / name, out / name)
            names.append(name)
    return names


def card(src: Path, out: Path, readme: str | None, graphs: list[str], quantize: str | None,
         decode: dict[str, Any]) -> str:
    """README.md of an exported folder: what it holds, how to run it, its limits, then the source model's card."""
    streaming, searched = CHUNK in graphs, decode.get("mode", "ctc")
    lines = [
        f"# ONNX export of {src.name}", "",
        f"The encoder and CTC head of `{src}` as ONNX graphs for onnxruntime"
        f"{' with int8 dynamic quantization' if quantize else ' (float32)'}: {', '.join(f'`{g}`' for g in graphs)}.",
        "", "```", f"transduce transcribe --model {out} audio.wav",
        *([f"transduce transcribe --stream --model {out} audio.wav"] if streaming else []), "```", "",
        "## Limits", "",
        "- CTC search only (prefix beam, LM fusion, endpointing): the attention decoders are not exported"
        + (f", so this folder decodes in mode ctc where the PyTorch model decodes in mode {searched}."
           if searched != "ctc" else "."),
        "- " + ("Streams through `encoder_chunk.onnx` (caches as named inputs and outputs; chunk size and left "
                "chunks are inputs, defaults in the metadata)." if streaming
                else "Whole utterances only: this model cannot stream (see its config)."),
        "- Runs on the CPU (onnxruntime CPUExecutionProvider) with torch's thread count.",
    ]
    if decode.get("ensemble"):
        lines.append(f"- Decodes alone: the source folder's ensemble with {', '.join(decode['ensemble'])} is not "
                     "part of the export.")
    if readme:
        lines += ["", "## Source model card", "", readme.strip()]
    return "\n".join(lines) + "\n"


def load(path: Path, device: str = "cpu") -> object:
    """The ``Recognizer`` of an exported folder, its model the ONNX graphs; a missing file is a one-line error."""
    from transduce.data.tokenizer import Tokenizer
    from transduce.export import read_export_info, require_files
    from transduce.export.onnx_runtime import OnnxCTCModel
    from transduce.models.ctc import CTCModel
    from transduce.models.folder import CONFIG, parse_yaml
    from transduce.recognize import Recognizer
    from transduce.tasks import parse_config

    if device != "cpu":
        raise UsageError(f"{path}: the ONNX export runs on the CPU (onnxruntime), not {device}")
    info = read_export_info(path) or {}
    require_files(path, [CONFIG, "README.md", *info.get("files", [OFFLINE, HEAD])])
    try:
        cfg = parse_config(parse_yaml((path / CONFIG).read_bytes(), path / CONFIG, "config"))
    except ConfigError as err:
        raise ConfigError(f"{path / CONFIG}: {err}") from None
    own = {field: str(path / name) for field in ("lm", "lexicon")  # the model's own files, as Recognizer.load
           if (name := getattr(cfg.decode, field)) and not Path(name).is_absolute() and (path / name).is_file()}
    if own:
        cfg = replace(cfg, decode=replace(cfg.decode, **own))
    model = cast(CTCModel, OnnxCTCModel(path))  # duck-typed: CTCModel's encoder, chunk and head interface
    recognizer = Recognizer(model, Tokenizer(path / "spm.model"), cfg, {"export": info}, device=device)
    recognizer.folder = path
    return recognizer

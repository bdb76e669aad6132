"""The ``transduce`` argument parser: one function per subcommand, the option groups they share."""

from __future__ import annotations

import argparse
from typing import Any

Subparsers = Any  # argparse's _SubParsersAction (private)


def floats(text: str) -> tuple[float, ...]:
    """A comma-separated list of numbers (argparse type)."""
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def decode_options(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--model", required=required, help="model folder (or run folder)")
    p.add_argument("--beam", type=int, help="beam size (1 = greedy); default from the model")
    p.add_argument("--len-penalty", type=float, help="length penalty alpha")
    p.add_argument("--batch-size", type=int, help="sentences per batch")


def rerank_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rerank", action="append", default=[], metavar="DIR",
                   help="translation: a model (e.g. right-to-left) that rescores the beam's n-best (repeatable; "
                        "replaces the model's decode.rerank; 'none' = no reranking)")
    p.add_argument("--rerank-weight", type=float, help="translation: the rerankers' share of the score (0-1)")
    p.add_argument("--rerank-weights", type=floats, default=(), metavar="W,W,...",
                   help="translation: each reranker's share of the rerankers' part, in --rerank (or "
                        "decode.rerank) order; rescaled to sum 1 (default equal shares)")


def attention_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--attention-layer", type=int, metavar="N",
                   help="Transformer: decoder layer whose cross-attention is shown (0-based, negative from "
                        "the end; default the last; plot titles count from 1)")
    p.add_argument("--attention-head", type=int, metavar="N",
                   help="Transformer: show this head (0-based) instead of the mean over heads")


def speech_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="speech model folder (or run folder)")
    p.add_argument("--beam", type=int, help="CTC prefix beam size (1 = greedy); default from the model")
    p.add_argument("--token-prune", type=int, help="tokens per frame in beam search (0 = all)")
    p.add_argument("--batch-size", type=int, help="utterances per batch")
    hybrid_options(p)


def hybrid_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mode", choices=["ctc", "attention", "joint", "rescore"],
                   help="speech decoding: ctc (greedy/prefix beam), attention beam, joint CTC/attention beam, "
                        "or attention rescoring of the CTC n-best (hybrid models); default from the model")
    p.add_argument("--ctc-weight", type=float, help="speech: CTC weight in joint search / rescoring")
    p.add_argument("--reverse-weight", type=float, help="speech: right-to-left decoder share in rescoring")
    p.add_argument("--chunk-ms", type=float, help="speech: attention chunk in ms (streaming-equivalent; "
                                                  "with --stream, the chunk fed per step; default 640)")
    p.add_argument("--left-chunks", type=int, help="speech: left chunks each chunk sees (-1 = all)")
    p.add_argument("--lm", help="speech: ARPA n-gram LM over the model's pieces for shallow fusion (transduce lm)")
    p.add_argument("--lm-weight", type=float, help="speech: shallow-fusion LM weight (0 = off; needs --beam > 1)")
    p.add_argument("--insertion-bonus", type=float, help="speech: shallow-fusion score added per token")
    p.add_argument("--lexicon", help="speech: known words, one per line (transduce lm --lexicon); with --lm")
    p.add_argument("--oov-penalty", type=float, help="speech: score subtracted per word not in --lexicon")
    p.add_argument("--stream", action="store_true", help="speech: recognize chunk by chunk as live audio")
    p.add_argument("--vad", action="store_true",
                   help="speech --stream: silero-vad decides speech/silence for endpointing (else CTC blanks)")
    p.add_argument("--endpoint-silence", type=float,
                   help="speech --stream: end a segment after this much trailing silence in seconds "
                        "(0 = one segment per file; transcribe default 0.8, evaluate default 0)")


def cascade_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--asr", metavar="DIR", help="speech model folder: recognize speech with it, then translate the "
                                                "transcripts with --model (a cascade); an OCR model folder: read "
                                                "text-line images (png, jpg) with it instead")
    p.add_argument("--truecase", metavar="FILE",
                   help="with --asr: English text --model was trained on (.gz ok) or a saved truecaser (.json): "
                        "restore the transcripts' casing, hyphens, commas and final punctuation before translating "
                        "(default: --model's truecase.json when it has one; none: no restoration)")


def _data(sub: Subparsers) -> None:
    """``transduce data DATASET``: prepare a dataset."""
    data = sub.add_parser("data", help="prepare a dataset").add_subparsers(dest="dataset", required=True)
    m30k = data.add_parser("multi30k", help="Multi30k task 1: download (or copy --from) and verify")
    m30k.add_argument("--out", required=True, help="output folder")
    m30k.add_argument("--from", dest="source", help="local folder with the upstream .gz files (and tok/)")
    m30k.add_argument("--pairs", default="en-de", help="languages, e.g. en-de or en-de-fr (default en-de)")
    digits = data.add_parser("digits", help="connected digits from the Free Spoken Digit Dataset (split by speaker)")
    digits.add_argument("--out", required=True, help="output folder")
    digits.add_argument("--from", dest="source", help="local FSDD folder (with recordings/); else download")
    digits.add_argument("--seed", type=int, default=1)
    digits.add_argument("--dev-speakers", default="nicolas", help="comma-separated dev speakers")
    digits.add_argument("--test-speakers", default="", help="comma-separated test speakers (default none)")
    digits.add_argument("--tts-utterances", type=int, default=0,
                        help="extra training utterances from TTS voices speaking the digits (default 0)")
    digits.add_argument("--tts-voices", default="default",
                        help="comma-separated ENGINE:VOICE[+VARIANT] (default: the captions training voices)")
    digits.add_argument("--tts-styles", type=int, default=6, help="random speaking styles per TTS voice")
    digits.add_argument("--tts-full-band", action="store_true",
                        help="keep the TTS takes' full band (default: band-limited to the recordings' rate, 8 kHz)")
    digits.add_argument("--workers", type=int, default=1, help="parallel synthesis processes")
    caps = data.add_parser("captions", help="Multi30k English captions spoken by TTS voices (split by voice)")
    caps.add_argument("--out", required=True, help="output folder")
    caps.add_argument("--from", dest="source", help="local Multi30k folder; else download")
    caps.add_argument("--seed", type=int, default=1)
    caps.add_argument("--train-sentences", type=int, default=10000)
    caps.add_argument("--dev-sentences", type=int, default=500)
    caps.add_argument("--workers", type=int, default=1, help="parallel synthesis processes")
    _data_speech_translation(data)
    _data_images(data)
    man = data.add_parser("manifest", help="convert a Kaldi data folder or a Lhotse CutSet to a JSON-lines manifest")
    man.add_argument("--from", dest="source", required=True, help="Kaldi folder (wav.scp, text) or CutSet file")
    man.add_argument("--out", required=True, help="manifest to write (.jsonl)")
    _data_feedback(data)
    toy = data.add_parser("toy", help="toy copy/reverse task for smoke tests")
    toy.add_argument("--out", required=True)
    toy.add_argument("--task", choices=["copy", "reverse"], default="reverse")
    toy.add_argument("--train", type=int, default=5000, help="training pairs")
    toy.add_argument("--seed", type=int, default=1)


def _data_speech_translation(data: argparse._SubParsersAction) -> None:
    """``transduce data speech-translation``, ``data st-import`` and ``data st-kd``."""
    st = data.add_parser("speech-translation", help="Multi30k captions spoken by the captions TTS voices, with their "
                                                    "de/fr/cs translations (split by voice)")
    st.add_argument("--out", required=True, help="output folder")
    st.add_argument("--from", dest="source", help="local Multi30k folder; else download")
    st.add_argument("--langs", default="de,fr,cs", help="target languages (default de,fr,cs)")
    st.add_argument("--seed", type=int, default=1)
    st.add_argument("--train-sentences", type=int, default=10000, help="0 = no train split")
    st.add_argument("--dev-sentences", type=int, default=500)
    st.add_argument("--workers", type=int, default=1, help="parallel synthesis processes")
    sti = data.add_parser("st-import", help="import a MuST-C split folder (wav/, txt/SPLIT.yaml, txt/SPLIT.en/.LANG) "
                                            "or a CoVoST TSV (+ clips/) as speech translation manifests")
    sti.add_argument("--from", dest="source", required=True,
                     help="MuST-C data folder (its split folders) or one split folder, or a CoVoST .tsv")
    sti.add_argument("--out", required=True, help="output folder (SPLIT.jsonl, and audio/SPLIT/ for MuST-C)")
    sti.add_argument("--tgt-lang", required=True, help="the target language of the corpus (e.g. de)")
    sti.add_argument("--splits", default="", help="comma-separated splits (MuST-C folders, CoVoST split column)")
    sti.add_argument("--clips", help="CoVoST: the folder of the clips (default: the TSV's folder/clips)")
    kd = data.add_parser("st-kd", help="add a translation model's translations of a speech translation manifest's "
                                       "English sentences as extra targets (sequence-level knowledge distillation)")
    kd.add_argument("--manifest", required=True, help="speech translation manifest to read")
    kd.add_argument("--model", required=True, help="the teacher: a translation model folder (English source)")
    kd.add_argument("--out", required=True, help="manifest to write (may be --manifest), with translation_kd")
    kd.add_argument("--lang", help="the key of its translations (default: the teacher's target language)")
    kd.add_argument("--beam", type=int, help="the teacher's beam (default: its own)")
    kd.add_argument("--batch-size", type=int, help="sentences per batch")


def _data_images(data: argparse._SubParsersAction) -> None:
    """``transduce data text-images``, ``text-images-import`` and ``digit-images`` (docs/images.md)."""
    ti = data.add_parser("text-images", help="Multi30k English captions rendered as text-line photos (split by font "
                                             "family)")
    ti.add_argument("--from", dest="source", required=True, help="local Multi30k folder (train/val .en, .de, ...)")
    ti.add_argument("--out", required=True, help="output folder")
    ti.add_argument("--seed", type=int, default=1)
    ti.add_argument("--train-sentences", type=int, default=10000)
    ti.add_argument("--dev-sentences", type=int, default=500)
    ti.add_argument("--height", type=int, default=32, help="image height in pixels (default 32)")
    ti.add_argument("--workers", type=int, default=1, help="parallel rendering processes")
    ti.add_argument("--heldout", action="store_true", help="instead: a held-out test.jsonl from test_2016_flickr in "
                                                           "the RESERVED font families (evaluation only)")
    ti.add_argument("--test-sentences", type=int, default=500, help="with --heldout: lines to render")
    imp = data.add_parser("text-images-import", help="a folder of line images with an IMAGE<TAB>TEXT list -> an image "
                                                     "manifest (images scaled to --height)")
    imp.add_argument("--list", required=True, help="IMAGE<TAB>TEXT lines, images relative to the list's folder")
    imp.add_argument("--out", required=True, help="output folder (NAME.jsonl and images/NAME/, NAME = the list's)")
    imp.add_argument("--height", type=int, default=32)
    dig = data.add_parser("digit-images", help="toy OCR set: random digit strings (Pillow's built-in font)")
    dig.add_argument("--out", required=True)
    dig.add_argument("--train", type=int, default=300)
    dig.add_argument("--dev", type=int, default=40)
    dig.add_argument("--seed", type=int, default=1)


def _data_feedback(data: argparse._SubParsersAction) -> None:
    """``transduce data feedback``: the served page's corrections for fine-tuning."""
    fb = data.add_parser("feedback", help="export the corrections `transduce serve --data-dir` stored, per model, as "
                                          "a speech manifest or parallel text (+ a fine-tuning recipe)")
    fb.add_argument("--db", required=True, help="feedback database (DATA_DIR/feedback.sqlite)")
    fb.add_argument("--out", required=True, help="output folder (one subfolder per model)")
    fb.add_argument("--model-dir", action="append", default=[], metavar="DIR",
                    help="the served model folder (matched by folder name): also write OUT/NAME/finetune.yaml "
                         "(repeatable)")
    fb.add_argument("--model", action="append", default=[], metavar="NAME", help="export only this model (repeatable)")
    fb.add_argument("--dev-fraction", type=float, default=0.1, help="share held out as the dev set (default 0.1)")
    fb.add_argument("--seed", type=int, default=1, help="seed of the train/dev split")
    fb.add_argument("--updates", type=int, default=60, help="finetune.yaml: training updates (default 60)")
    fb.add_argument("--lr-scale", type=float, default=0.1,
                    help="finetune.yaml: peak learning rate as a share of the model's own (default 0.1)")


def _train(sub: Subparsers) -> None:
    """``transduce train RECIPE``."""
    train = sub.add_parser("train", help="train a model from a YAML recipe")
    train.add_argument("recipe", help="YAML recipe (see recipes/)")
    train.add_argument("--out", required=True, help="run folder (checkpoints, metrics, model/)")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a recipe value, e.g. --set optim.lr=5e-4 (repeatable)")
    train.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")


def _translate(sub: Subparsers) -> None:
    """``transduce translate``."""
    tr = sub.add_parser("translate", help="translate lines from stdin, files or arguments")
    decode_options(tr)
    tr.add_argument("--quantize", choices=["int8"],
                    help="PyTorch Transformer models: int8 Linear layers (dynamic quantization, CPU)")
    tr.add_argument("--nbest", type=int, default=1, help="print the K best as 'score<TAB>text'")
    tr.add_argument("--input", action="append", default=[], help="input file (repeatable)")
    tr.add_argument("--coverage-penalty", type=float, help="GNMT coverage penalty beta in beam search (0 = off)")
    tr.add_argument("--ensemble", action="append", default=[], metavar="DIR",
                    help="another model with the same tokenizers, searched together with --model (repeatable; "
                         "replaces the model's decode.ensemble; 'none' = this model alone)")
    rerank_options(tr)
    tr.add_argument("--plot-attention", metavar="DIR",
                    help="write one attention heatmap per sentence (DIR/NNNN.png, numbered from 1)")
    attention_options(tr)
    cascade_options(tr)
    tr.add_argument("--manifest", help="with --asr or a speech translation --model: a speech manifest; prints "
                                       "{id, text} per utterance in its order")
    tr.add_argument("--tgt-lang", help="speech translation model: the target language (default: its first)")
    tr.add_argument("--task", choices=["translate", "transcribe"],
                    help="unified model: what to do with the input (default: translate)")
    tr.add_argument("sentences", nargs="*", help="sentences to translate (else stdin); with --asr: audio files")


def _transcribe(sub: Subparsers) -> None:
    """``transduce transcribe``."""
    tc = sub.add_parser("transcribe", help="speech (or, with an OCR model, text-line images) to text: "
                                           "FILE<TAB>TRANSCRIPT lines, or JSON lines with --manifest")
    speech_options(tc)
    tc.add_argument("--manifest", help="JSON-lines manifest: print {id, text} per utterance")
    tc.add_argument("--nbest", type=int, default=1, help="print the K best as 'FILE<TAB>score<TAB>text'")
    tc.add_argument("--timestamps", action="store_true", help="also print each token's start time (JSON)")
    tc.add_argument("--realtime", action="store_true", help="with --stream: feed audio no faster than real time")
    tc.add_argument("--segment", choices=["auto", "vad", "none"], default="auto",
                    help="cut files at pauses (silero-vad), read block by block, and print FILE<TAB>START<TAB>END"
                         "<TAB>TEXT per piece: auto = files over 60 s (default), vad = every file, none = never "
                         "(a whole long file is encoded with local attention, decode.window)")
    tc.add_argument("--ensemble", action="append", default=[], metavar="DIR",
                    help="another speech model (any units) whose CTC scores rank the pooled n-best with --model's "
                         "(repeatable; replaces the model's decode.ensemble; 'none' = this model alone)")
    tc.add_argument("files", nargs="*", help="audio files (wav, flac, ogg); image files (png, jpg) for an OCR model")


def _evaluate(sub: Subparsers) -> None:
    """``transduce evaluate``: translation or speech."""
    ev = sub.add_parser("evaluate", help="BLEU/chrF of a translation model, or WER/CER of a speech model, as JSON")
    decode_options(ev, required=True)
    ev.add_argument("--quantize", choices=["int8"],
                    help="translation, PyTorch Transformer models: int8 Linear layers (dynamic quantization, CPU)")
    ev.add_argument("--token-prune", type=int, help="speech: tokens per frame in beam search (0 = all)")
    hybrid_options(ev)
    ev.add_argument("--src", help="translation: source file (one sentence per line; .gz ok)")
    ev.add_argument("--ref", help="translation: reference file, detokenized")
    ev.add_argument("--manifest", help="speech: JSON-lines manifest with reference transcripts")
    ev.add_argument("--json", action="store_true", help="speech: one-line JSON (default: indented)")
    ev.add_argument("--report", help="speech: write the per-utterance alignment report (S/I/D) here")
    ev.add_argument("--ref-tok", help="official tokenized lowercased references (else made from --ref)")
    ev.add_argument("--lang", help="target language for Moses tokenization (default: the model's)")
    ev.add_argument("--ensemble", action="append", default=[], metavar="DIR",
                    help="another model searched with --model (repeatable). Translation: same tokenizers; speech: "
                         "any units, the pooled n-best ranked by summed CTC log-likelihoods, replacing the "
                         "model's own decode.ensemble ('none' = this model alone)")
    rerank_options(ev)
    ev.add_argument("--output", help="also write the translations here")
    ev.add_argument("--coverage-penalty", type=float, help="translation: GNMT coverage penalty beta (0 = off)")
    cascade_options(ev)
    ev.add_argument("--tgt-lang", help="with --asr or a speech translation --model: the manifest's translations to "
                                       "score against (default: the --model's (first) target language)")


def _align(sub: Subparsers) -> None:
    """``transduce align``: forced alignment."""
    al = sub.add_parser("align", help="forced alignment of source/target pairs: attention heatmaps and/or "
                                      "text alignments, log-probabilities on stdout")
    al.add_argument("--model", required=True, help="translation model folder (or run folder)")
    al.add_argument("--src", required=True, help="source sentences, one per line")
    al.add_argument("--tgt", required=True, help="target sentences, one per line (the same count)")
    al.add_argument("--out", required=True, help="folder for NNNN.png / NNNN.txt per pair (numbered from 1)")
    al.add_argument("--format", choices=["png", "txt", "both"], default="both",
                    help="heatmaps, text alignments (argmax source piece per target piece) or both (default)")
    al.add_argument("--batch-size", type=int, help="pairs per batch")
    attention_options(al)


def _average(sub: Subparsers) -> None:
    """``transduce average``: checkpoint averaging."""
    av = sub.add_parser("average", help="average the last N checkpoints of a run into a model folder")
    av.add_argument("run", help="run folder")
    av.add_argument("--last", type=int, default=10, help="how many newest checkpoints")
    av.add_argument("--out", required=True, help="model folder to write")
    av.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32",
                    help="weights as stored (loading converts to float32): float16 halves the folder")


def _lm(sub: Subparsers) -> None:
    """``transduce lm``: n-gram LM over a speech model's pieces."""
    lm = sub.add_parser("lm", help="train an n-gram LM over a speech model's pieces (for --lm shallow fusion)")
    lm.add_argument("--model", required=True, help="speech model folder (its tokenizer splits the text)")
    lm.add_argument("--text", nargs="+", required=True, help="training text, one sentence per line (.gz ok)")
    lm.add_argument("--out", required=True, help="ARPA file to write (.gz compresses)")
    lm.add_argument("--order", type=int, default=6, help="n-gram order (default 6)")
    lm.add_argument("--normalize", choices=["none", "words"], default="none",
                    help="words: lowercase words without punctuation, as `transduce data captions` transcribes")
    lm.add_argument("--exclude", action="append", default=[], metavar="MANIFEST",
                    help="drop text lines equal to a transcript of this manifest (keeps dev/test out; repeatable)")
    lm.add_argument("--dev", metavar="MANIFEST", help="report perplexity per piece on its transcripts")
    lm.add_argument("--lexicon", metavar="FILE", help="also write the training text's words here, one per line")


def _export(sub: Subparsers) -> None:
    """``transduce export``: a model folder for an inference runtime."""
    ex = sub.add_parser("export", help="export a model folder for CTranslate2 (translation) or ONNX Runtime")
    ex.add_argument("--model", required=True, help="model folder (or run folder)")
    ex.add_argument("--format", required=True, help="ctranslate2 (Transformer translation models) or onnx "
                                                    "(CTC/hybrid Conformer speech models: encoder + CTC head)")
    ex.add_argument("--out", required=True, help="folder to write (must not exist, or be empty)")
    ex.add_argument("--quantize", choices=["int8", "int8_float32", "int16", "float16"],
                    help="store the weights quantized (default float32)")


def _info(sub: Subparsers) -> None:
    """``transduce info``."""
    info = sub.add_parser("info", help="describe a model or run folder")
    info.add_argument("path")


def _serve(sub: Subparsers) -> None:
    """``transduce serve``: HTTP + WebSocket server (``transduce/server/``)."""
    sv = sub.add_parser("serve", help="serve models over HTTP and WebSocket (translate, transcribe, live streams)")
    sv.add_argument("--model", action="append", default=[], metavar="DIR",
                    help="model folder to serve (repeatable; requests pick one by folder name; default the "
                         "bundled models/multi30k-en-de and models/digits-hybrid-streaming)")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    sv.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    sv.add_argument("--max-streams", type=int, default=64, help="open WebSocket streams at most (default 64)")
    sv.add_argument("--api-key", help="require this key on every route but /health (or set TRANSDUCE_API_KEY)")
    sv.add_argument("--data-dir", help="folder for feedback (corrections in feedback.sqlite); default: feedback off")
    sv.add_argument("--chunk-ms", type=float, default=640.0, help="streams: audio per encoder chunk (default 640)")
    sv.add_argument("--threads", type=int, default=1,
                    help="torch threads per worker (streams, translation and files each have one; default 1)")
    sv.add_argument("--no-batching", action="store_true", help="translate each request alone (for comparisons)")


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="transduce", description=description)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_data, _train, _translate, _transcribe, _evaluate, _align, _average, _lm, _export, _info, _serve):
        add(sub)
    return parser

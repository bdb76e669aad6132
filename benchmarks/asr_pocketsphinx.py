"""WER and real-time factor of our CTC recognizer against PocketSphinx 5 with a digit grammar.

Our model decodes with greedy and beam search without any LM or ensemble partner, and with its own default
search (for the bundled digits model: beam 8 with a digit grammar made of its n-gram LM and ten-word lexicon,
the fair match for PocketSphinx's grammar, pooled with the word-unit streaming model's n-best and ranked by
both models' CTC scores); PocketSphinx with a grammar; all on the same utterances.

Run (trained digits model, dev speaker nicolas):
    nice -n 10 .venv/bin/python benchmarks/asr_pocketsphinx.py --model work/runs/digits/model \\
        --manifest work/data/digits/dev.jsonl
Quick check:
    nice -n 10 .venv/bin/python benchmarks/asr_pocketsphinx.py --model DIR --limit 20

PocketSphinx uses its bundled US-English acoustic model and CMUdict with a JSGF grammar of one or
more words zero..nine (its FSG search adds optional silence and filler loops between words, so the
grammar does not spell them); 16-bit PCM at 16 kHz is fed one whole utterance at a time
(``full_utt``: batch CMN, as the model's feat.params ask). Our model transcribes float waveforms
in length-sorted batches of --batch-size. Audio is read before the clocks start for both; model
loading is outside the timings; each system is warmed up on the first utterances. Real-time factor
= decode seconds / audio seconds (lower is faster), with --threads torch threads (PocketSphinx is
single-threaded). Hypotheses of both systems are normalized (lowercase, no fillers, "oh" -> "zero")
before WER/CER. The greedy row is the baseline of the ratio columns; ratio lines follow the table,
then one command per system that reproduces its row.

PocketSphinx runs with its default search settings; --ps-set KEY=VALUE changes any Config entry
(e.g. ``wip=1e-3`` for fewer insertions, or ``beam=1e-57 --ps-set wbeam=1e-56``, the usual cure for
"Final result does not match the grammar", which costs about 15x the decoding time). --limit
defaults to the first 200 utterances (about 2 minutes on a quiet 2-core machine); 0 takes all.

Caveat printed with the results: FSDD was recorded at 8 kHz, so the audio has no energy above
4 kHz, while PocketSphinx's bundled model is a 16 kHz wideband model (mel filters up to 6.8 kHz).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from asr_common import DEFAULT_MANIFEST, DEFAULT_MODEL, command_line, load_subset, normalize, timed
from common import machine_line
from torch import Tensor

from transduce.data.audio import load_audio
from transduce.metrics.wer import cer, wer
from transduce.recognize import Recognizer

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SYSTEMS = ("greedy", "beam", "default", "pocketsphinx")


@dataclass
class Row:
    name: str
    hyps: list[str]
    seconds: float
    failures: int = 0
    """Utterances without any hypothesis (PocketSphinx: no path reached the grammar's end)."""


def grammar(allow_oh: bool) -> str:
    """JSGF: one or more digit words ("oh" as another word for zero when ``allow_oh``)."""
    words = " | ".join(DIGITS + (("oh",) if allow_oh else ()))
    return f"#JSGF V1.0;\ngrammar digits;\npublic <digits> = <digit>+;\n<digit> = {words};\n"


def parse_setting(text: str) -> tuple[str, object]:
    """``key=value`` -> (key, int | float | bool | str value) for a PocketSphinx Config entry."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    for kind in (int, float):
        try:
            return key, kind(raw)
        except ValueError:
            pass
    return key, {"true": True, "false": False}.get(raw.lower(), raw)


def pocketsphinx_decoder(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """A Decoder with the bundled en-us model and dictionary, the digit grammar active."""
    from pocketsphinx import Decoder

    decoder = Decoder(lm=None, loglevel="FATAL", **dict(args.ps_set))  # lm=None: no default n-gram
    decoder.add_jsgf_string("digits", grammar(args.oh))
    decoder.activate_search("digits")
    config = decoder.config
    print(f"pocketsphinx: hmm {Path(config['hmm']).name}, dict {Path(config['dict']).name}, grammar "
          f"<digit>+ over {'zero..nine + oh' if args.oh else 'zero..nine'}, beam {config['beam']:g}, "
          f"wip {config['wip']:g}, fsgusefiller {config['fsgusefiller']}")
    return decoder


def run_pocketsphinx(decoder, pcm: list[bytes]) -> tuple[list[str], int]:  # type: ignore[no-untyped-def]
    """Hypotheses of whole-utterance decodes, and how many utterances got none."""
    hyps, failures = [], 0
    for data in pcm:
        decoder.start_utt()
        decoder.process_raw(data, full_utt=True)
        decoder.end_utt()
        hyp = decoder.hyp()
        failures += hyp is None
        hyps.append(hyp.hypstr if hyp is not None else "")
    return hyps, failures


def to_pcm16(wave: Tensor) -> bytes:
    """(N,) float in [-1, 1] -> little-endian 16-bit PCM bytes (exact for audio read from PCM16)."""
    ints = np.clip(np.round(wave.numpy() * 32768.0), -32768, 32767).astype("<i2")
    return ints.tobytes()


def energy_above(waves: list[Tensor], hz: float, rate: int = 16000) -> float:
    """Fraction of the total spectral energy of ``waves`` above ``hz``."""
    high = total = 0.0
    for wave in waves:
        power = torch.fft.rfft(wave.double()).abs().square()  # (N // 2 + 1,)
        freqs = torch.fft.rfftfreq(wave.numel(), 1 / rate)
        high, total = high + float(power[freqs > hz].sum()), total + float(power.sum())
    return high / max(total, 1e-30)


def decode_all(args: argparse.Namespace, waves: list[Tensor]) -> list[Row]:
    """One Row per system asked for, in SYSTEMS order."""
    rows: list[Row] = []
    systems = set(args.systems.split(","))
    if systems & {"greedy", "beam", "default"}:
        rec = Recognizer.load(args.model)
        if rec.sample_rate != 16000:
            raise SystemExit(f"{args.model}: expects {rec.sample_rate} Hz audio; this benchmark feeds 16 kHz")
        batch = args.batch_size or rec.config.decode.batch_size
        searches: dict[str, dict[str, object]] = {
            "greedy": {"beam": 1, "lm_weight": 0.0, "ensemble": ()},
            "beam": {"beam": args.beam, "token_prune": args.token_prune, "lm_weight": 0.0, "ensemble": ()},
            "default": {}}
        for name, opts in searches.items():
            if name in systems:
                rec.transcribe(waves[: args.warmup], batch_size=batch, **opts)
                hyps, seconds = timed(rec.transcribe, waves, batch_size=batch, **opts)
                rows.append(Row(our_label(args, name), hyps, seconds))
        if "default" in systems:
            print(f"ours default = the model's own search: {rec.config.decode.describe()}")
    if "pocketsphinx" in systems:
        decoder = pocketsphinx_decoder(args)
        pcm = [to_pcm16(w) for w in waves]
        run_pocketsphinx(decoder, pcm[: args.warmup])
        (hyps, failures), seconds = timed(run_pocketsphinx, decoder, pcm)
        rows.append(Row("pocketsphinx 5 (grammar)", hyps, seconds, failures))
    return rows


def our_label(args: argparse.Namespace, system: str) -> str:
    return {"greedy": "ours greedy", "beam": f"ours beam {args.beam}", "default": "ours default"}[system]


def print_table(rows: list[Row], refs: list[str], audio_s: float) -> dict[str, tuple[float, float]]:
    """The results table; returns {name: (WER, RTF)}."""
    print(f"\n{'system':26} {'utts':>5} {'decode s':>9} {'RTF':>7} {'x realtime':>10} {'WER %':>7} "
          f"{'CER %':>7} {'no hyp':>6} {'RTF vs base':>11}")
    out: dict[str, tuple[float, float]] = {}
    base_rtf = None
    for row in rows:
        hyps = [normalize(h) for h in row.hyps]
        rtf = row.seconds / audio_s
        base_rtf = base_rtf or rtf
        out[row.name] = (wer(hyps, refs), rtf)
        print(f"{row.name:26} {len(hyps):5d} {row.seconds:9.2f} {rtf:7.4f} {1 / rtf:10.1f} "
              f"{out[row.name][0]:7.2f} {cer(hyps, refs):7.2f} {row.failures:6d} {rtf / base_rtf:10.2f}x")
    return out


def print_examples(rows: list[Row], refs: list[str], count: int) -> None:
    """Reference and each system's normalized hypothesis for the first ``count`` utterances."""
    for i in range(min(count, len(refs))):
        print(f"  {'reference':24} | {refs[i]}")
        for row in rows:
            print(f"  {row.name:24} | {normalize(row.hyps[i])}")


def print_ratios(results: dict[str, tuple[float, float]]) -> None:
    """PocketSphinx against each of our rows: WER ratio and speed ratio."""
    theirs = next((v for k, v in results.items() if k.startswith("pocketsphinx")), None)
    if theirs is None:
        return
    print()
    for name, (our_wer, our_rtf) in results.items():
        if name.startswith("pocketsphinx"):
            continue
        ratio = f"{theirs[0] / our_wer:.2f}x" if our_wer > 0 else "inf (ours has no errors)"
        print(f"pocketsphinx WER / {name} WER: {theirs[0]:.2f} / {our_wer:.2f} = {ratio}")
        print(f"{name} RTF / pocketsphinx RTF: {our_rtf:.4f} / {theirs[1]:.4f} = {our_rtf / theirs[1]:.2f} "
              f"({theirs[1] / our_rtf:.2f}x as fast as pocketsphinx)")


def print_commands(args: argparse.Namespace, rows: list[Row]) -> None:
    names = {our_label(args, s): s for s in SYSTEMS if s != "pocketsphinx"}
    names["pocketsphinx 5 (grammar)"] = "pocketsphinx"
    print()
    for row in rows:
        system = names[row.name]
        opts: list[tuple[str, object]] = [("--model", Path(args.model)), ("--manifest", Path(args.manifest)),
                                          ("--limit", args.limit), ("--threads", args.threads),
                                          ("--systems", system)]
        if system != "pocketsphinx":
            opts.append(("--batch-size", args.batch_size or None))
        if system == "beam":
            opts += [("--beam", args.beam), ("--token-prune", args.token_prune)]
        if system == "pocketsphinx":
            opts += [("--oh", args.oh)] + [("--ps-set", f"{k}={v}") for k, v in args.ps_set]
        print(f"reproduce {row.name}: {command_line('asr_pocketsphinx.py', opts)}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="exported CTC model folder")
    parser.add_argument("--manifest", default=str(DEFAULT_MANIFEST), help="JSON-lines speech manifest")
    parser.add_argument("--limit", type=int, default=200, help="first N utterances (0 = all)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated subset of {SYSTEMS}")
    parser.add_argument("--batch-size", type=int, default=0, help="our batch size (0 = the model's decode setting)")
    parser.add_argument("--beam", type=int, default=8, help="our CTC prefix beam")
    parser.add_argument("--token-prune", type=int, default=0, help="tokens per frame in our beam (0 = all)")
    parser.add_argument("--warmup", type=int, default=4, help="utterances decoded once before timing")
    parser.add_argument("--oh", action="store_true", help="let the grammar say 'oh' for zero (scored as zero)")
    parser.add_argument("--ps-set", type=parse_setting, action="append", default=[], metavar="KEY=VALUE",
                        help="PocketSphinx Config entry, e.g. wip=1e-3 (repeatable; defaults otherwise)")
    args = parser.parse_args()
    unknown = set(args.systems.split(",")) - set(SYSTEMS)
    if unknown:
        parser.error(f"--systems: unknown {sorted(unknown)}; choose from {SYSTEMS}")
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    print(machine_line(args.threads))
    utts = load_subset(args.manifest, args.limit)
    refs = [normalize(u.text) for u in utts]
    waves = [load_audio(u.audio, 16000) for u in utts]
    audio_s = sum(w.numel() for w in waves) / 16000
    print(f"data: {len(utts)} utterances of {args.manifest}, {audio_s:.1f} s of audio, speakers "
          f"{', '.join(sorted({u.speaker for u in utts}))}; model {args.model}")
    print(f"audio energy above 4 kHz: {100 * energy_above(waves, 4000.0):.4f}% (FSDD was recorded at 8 kHz); "
          "PocketSphinx's bundled en-us model is a 16 kHz wideband model (mel filters up to 6.8 kHz)")
    rows = decode_all(args, waves)
    results = print_table(rows, refs, audio_s)
    if "pocketsphinx" in args.systems:
        print("no hyp: utterances left without a transcript (PocketSphinx: 'Final result does not match "
              "the grammar', its search ended outside the grammar's final state); scored as deletions")
    print_examples(rows, refs, 3)
    print_ratios(results)
    print_commands(args, rows)


if __name__ == "__main__":
    main()

"""Typed run configuration: one keyword-only dataclass per section of a recipe.

YAML parsing and ``--set`` overrides live in ``transduce/cli/config.py``; the library only sees these objects.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from transduce.errors import ConfigError
from transduce.models.transformer import TransformerConfig


@dataclass(kw_only=True)
class DataConfig:
    """Where the parallel text lives and how it is tokenized and filtered."""

    dir: str = "data"
    """Folder with {train,valid}.{src_lang,tgt_lang} text files (.gz allowed)."""
    src_lang: str = "en"
    """Source file suffix."""
    tgt_lang: str = "de"
    """Target file suffix."""
    train: str = "train"
    """Prefix of the training files; several comma-separated are read one after another
    (``train,train.kd``: the real pairs, then distilled ones, README "Distillation")."""
    valid: str = "val"
    """Prefix of the development files (tuning and early stopping)."""
    vocab_size: int = 8000
    """SentencePiece vocabulary size (per side when not joint)."""
    tokenizer: str = "bpe"
    """SentencePiece model type: bpe or unigram (char and word also accepted)."""
    joint_vocab: bool = True
    """One tokenizer for both sides (required by model.share_embeddings)."""
    character_coverage: float = 1.0
    """SentencePiece character coverage."""
    max_len: int = 200
    """Drop training pairs with more tokens than this on either side."""
    max_len_ratio: float = 3.0
    """Drop training pairs whose token-length ratio exceeds this."""
    num_workers: int = 0
    """Processes collating batches (batches are identical whatever the number)."""
    reverse_target: bool = False
    """Right-to-left model: the target token order is reversed for training and flipped back after
    search (used to rerank a left-to-right model's n-best, decode.rerank)."""


@dataclass(kw_only=True)
class ManifestDataConfig:
    """What every manifest-based data section has (speech: ``SpeechDataConfig``, images: ``ImageDataConfig``):
    where the JSON-lines manifests live and how their transcripts are tokenized."""

    dir: str = "data"
    """Folder with the JSON-lines manifests."""
    train: str = "train.jsonl"
    """Training manifest (relative to dir); several comma-separated are read one after another
    (``train.jsonl,../captions-s2/train.jsonl``)."""
    valid: str = "dev.jsonl"
    """Development manifest (tuning, early stopping)."""
    tokenizer: str = "char"
    """SentencePiece model type for transcripts: char, bpe or unigram."""
    vocab_size: int = 64
    """SentencePiece vocabulary size (char: an upper bound)."""
    num_workers: int = 0
    """Processes loading and featurizing examples (batches are identical whatever the number)."""


@dataclass(kw_only=True)
class OptimConfig:
    """Optimizer and learning-rate schedule."""

    name: str = "adam"
    """adam or adamw."""
    lr: float = 5e-4
    """Peak learning rate."""
    betas: tuple[float, float] = (0.9, 0.98)
    """Adam betas."""
    eps: float = 1e-8
    """Adam epsilon."""
    weight_decay: float = 0.0
    """Weight decay (decoupled for adamw)."""
    warmup: int = 4000
    """Linear warmup updates."""
    warmup_init_lr: float = 1e-7
    """Learning rate at update 0."""
    schedule: str = "inverse_sqrt"
    """inverse_sqrt (fairseq) or constant after warmup."""


@dataclass(kw_only=True)
class TrainConfig:
    """The training loop."""

    max_tokens: int = 4096
    """Padded tokens per batch (per process)."""
    update_freq: int = 1
    """Batches accumulated per update."""
    max_updates: int = 10000
    """Stop after this many updates."""
    max_epochs: int = 1000
    """Stop after this many epochs."""
    clip_norm: float = 0.0
    """Gradient-norm clipping (0 = off)."""
    label_smoothing: float = 0.1
    """Label smoothing epsilon."""
    precision: str = "fp32"
    """fp32, bf16 (autocast), fp16 (autocast + dynamic loss scaling) or auto: bf16 where the device computes it
    natively (CUDA with bf16; CPUs with AMX or AVX512-BF16), fp32 otherwise, logged with the reason; checkpoints
    and the model folder record the choice. Master weights stay fp32."""
    compile: bool = False
    """torch.compile each layer's training forward (train/compile.py); the first updates pay a warm-up, which
    the log reports. Needs a C++ compiler on CPU, Triton on CUDA."""
    seed: int = 1
    """Seed for initialization, shuffling and dropout."""
    init_from: str = ""
    """Fine-tuning: a model folder (or run folder) whose weights start this run and whose tokenizers it
    shares; optimizer, schedule and data order start fresh (speech: CMVN is re-estimated on this data).
    A resumed run continues from its own checkpoint instead."""
    threads: int = 0
    """torch intra-op threads (0 = torch default)."""
    device: str = "auto"
    """auto (CUDA when available), cpu, cuda or cuda:N."""
    parallel: str = "ddp"
    """Under torchrun: ddp (replicated model), fsdp (FSDP2 sharding, sharded checkpoints), tp (tensor parallel:
    attention heads and feed-forward features split over the processes) or pp (pipeline parallel: layers split
    into one stage per process, train.microbatches). tp and pp: every process sees the same batches."""
    microbatches: int = 1
    """pp: pieces each batch is split into along the batch, pipelined through the stages (GPipe)."""
    log_every: int = 50
    """Updates between log lines in metrics.jsonl."""
    eval_every: int = 500
    """Updates between dev evaluations (and checkpoints)."""
    eval_bleu: bool = True
    """Decode the dev set greedily at each evaluation and report BLEU."""
    keep_last: int = 10
    """Step checkpoints kept on disk (the best is kept apart)."""
    patience: int = 0
    """Stop after this many evaluations without dev improvement (0 = never)."""
    max_nonfinite: int = 10
    """Stop when the loss is NaN/inf for this many updates in a row (each such batch is skipped)."""
    average_last: int = 0
    """At the end, export the average of the last N checkpoints instead of the best (0 = best)."""

    def __post_init__(self) -> None:
        if self.microbatches < 1:
            raise ConfigError(f"train.microbatches: must be >= 1, got {self.microbatches}")


@dataclass(kw_only=True)
class SearchConfig:
    """The search settings every model kind decodes with (its decode section adds its own)."""

    beam: int = 5
    """Beam size (1 = greedy)."""
    len_penalty: float = 1.0
    """Length penalty exponent alpha."""
    len_penalty_style: str = "fairseq"
    """fairseq (score / len^alpha) or gnmt (score / ((5+len)/6)^alpha)."""
    max_len_a: float = 1.2
    """Max output length = a * source length + b."""
    max_len_b: int = 10
    """See max_len_a."""
    nbest: int = 1
    """Hypotheses returned per input."""
    batch_size: int = 64
    """Inputs decoded together."""


@dataclass(kw_only=True)
class DecodeConfig(SearchConfig):
    """Search settings of a text translation model, used by translate/evaluate (overridable on the command line)."""

    coverage_penalty: float = 0.0
    """GNMT coverage penalty beta (Wu et al. 2016) in beam search, 0 = off; needs a model that
    returns cross-attention weights (RNN and Transformer translation models do)."""
    ensemble: tuple[str, ...] = ()
    """Other translation model folders with the same tokenizers, searched together with this model
    (next-token probabilities averaged at each step); a relative path is resolved in the model folder."""
    rerank: tuple[str, ...] = ()
    """Translation model folders (typically right-to-left ones, data.reverse_target) that score each of
    the beam's n-best by forced decoding; relative paths are resolved in the model folder."""
    rerank_weight: float = 0.5
    """Reranked score: (1 - w) * the search's length-normalized score + w * the rerankers' mean
    (length-normalized the same way); 0 = no reranking."""
    rerank_weights: tuple[float, ...] = ()
    """Each decode.rerank model's share of that mean, in the same order (>= 0, rescaled to sum 1);
    empty = equal shares. Belongs to the config's own rerank list: naming other rerankers (--rerank)
    drops it."""


DEFAULT_TASK = "translation"
"""The task of a recipe or model config without a ``task:`` key."""


@dataclass(kw_only=True)
class RunConfig:
    """A whole recipe. ``task`` names the task kind (``transduce/tasks/__init__.py``), which picks the types of
    the data, model and decode sections."""

    task: str = DEFAULT_TASK
    data: Any = field(default_factory=DataConfig)
    model: Any = field(default_factory=TransformerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: Any = field(default_factory=DecodeConfig)


SECTIONS = {"data": DataConfig, "model": TransformerConfig, "optim": OptimConfig,
            "train": TrainConfig, "decode": DecodeConfig}
"""The sections of a recipe with their default types; a task kind replaces data, model and decode."""


def to_dict(cfg: RunConfig) -> dict:
    """Plain nested dict (lists, not tuples) for YAML, JSON and checkpoints."""
    from dataclasses import asdict

    def plain(value: object) -> object:
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return plain(asdict(cfg))  # type: ignore[return-value]


def _coerce(value: object, annotation: str, key: str) -> object:
    """Check (and gently convert) one YAML value against a field's annotation."""
    if annotation == "bool":
        if isinstance(value, bool):
            return value
    elif annotation == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 5e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif annotation == "str":
        if isinstance(value, str):
            return value
    elif annotation == "tuple[str, ...]":
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return tuple(value)
    elif annotation.startswith("tuple[float"):  # tuple[float, float] and tuple[float, ...]
        if isinstance(value, (list, tuple)) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
        ):
            return tuple(float(v) for v in value)
    else:
        return value
    raise ConfigError(f"{key}: expected {annotation}, got {type(value).__name__} {value!r}")


def _check_names(data: dict, what: str) -> None:
    """Keys must be strings (YAML also allows numbers, booleans, null and lists as keys)."""
    for key in data:
        if not isinstance(key, str):
            raise ConfigError(f"{what} {key!r} is a {type(key).__name__}, not a string")


def section_from_dict(cls: type, data: object, name: str) -> object:
    from dataclasses import fields

    if not isinstance(data, dict):
        raise ConfigError(f"{name}: expected a mapping, got {type(data).__name__}")
    _check_names(data, f"{name}: key")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{name}.{unknown[0]}: unknown key (known: {', '.join(sorted(known))})")
    values = {k: _coerce(v, str(known[k].type), f"{name}.{k}") for k, v in data.items()}
    return cls(**values)


def from_dict(data: object, sections: Callable[[str], Mapping[str, type]]) -> RunConfig:
    """Nested dict (as from YAML) -> RunConfig; ``sections(task)`` gives the dataclass of each section of the
    recipe's task (``transduce.tasks.parse_config`` passes the task kind's). Unknown keys and wrong types raise
    ConfigError naming the key."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping of sections, got {type(data).__name__}")
    _check_names(data, "section name")
    task = data.get("task", DEFAULT_TASK)
    if not isinstance(task, str):
        raise ConfigError(f"task: expected str, got {type(task).__name__} {task!r}")
    kinds = sections(task)
    unknown = sorted(set(data) - set(kinds) - {"task"})
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown section (known: task, {', '.join(kinds)})")
    values = {name: section_from_dict(cls, data.get(name, {}), name) for name, cls in kinds.items()}
    return RunConfig(task=task, **values)  # type: ignore[arg-type]

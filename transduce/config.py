"""Typed run configuration: one keyword-only dataclass per section of a recipe.

YAML parsing and ``--set`` overrides live in ``transduce/cli/config.py``; the library only
sees these objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
    """Prefix of the training files."""
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
    """fp32 or bf16 (autocast, fp32 master weights)."""
    seed: int = 1
    """Seed for initialization, shuffling and dropout."""
    threads: int = 0
    """torch intra-op threads (0 = torch default)."""
    device: str = "auto"
    """auto (CUDA when available), cpu, cuda or cuda:N."""
    parallel: str = "ddp"
    """Under torchrun: ddp (replicated model) or fsdp (FSDP2 sharding, sharded checkpoints)."""
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


@dataclass(kw_only=True)
class DecodeConfig:
    """Search settings used by translate/evaluate (overridable on the command line)."""

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
    """Hypotheses returned per sentence."""
    batch_size: int = 64
    """Sentences decoded together."""


@dataclass(kw_only=True)
class RunConfig:
    """A whole recipe."""

    data: DataConfig = field(default_factory=DataConfig)
    model: TransformerConfig = field(default_factory=TransformerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)


SECTIONS = {"data": DataConfig, "model": TransformerConfig, "optim": OptimConfig,
            "train": TrainConfig, "decode": DecodeConfig}


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


class ConfigError(ValueError):
    """A recipe that does not fit the dataclasses; the message names the key."""


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
    elif annotation.startswith("tuple[float"):
        if isinstance(value, (list, tuple)) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
        ):
            return tuple(float(v) for v in value)
    else:
        return value
    raise ConfigError(f"{key}: expected {annotation}, got {type(value).__name__} {value!r}")


def section_from_dict(cls: type, data: object, name: str) -> object:
    from dataclasses import fields

    if not isinstance(data, dict):
        raise ConfigError(f"{name}: expected a mapping, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{name}.{unknown[0]}: unknown key (known: {', '.join(sorted(known))})")
    values = {k: _coerce(v, str(known[k].type), f"{name}.{k}") for k, v in data.items()}
    return cls(**values)


def from_dict(data: object) -> RunConfig:
    """Nested dict (as from YAML) -> RunConfig; unknown keys and wrong types raise ConfigError."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping of sections, got {type(data).__name__}")
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown section (known: {', '.join(SECTIONS)})")
    sections = {name: section_from_dict(cls, data.get(name, {}), name) for name, cls in SECTIONS.items()}
    return RunConfig(**sections)  # type: ignore[arg-type]

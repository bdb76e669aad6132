"""Dev-set loss and BLEU during training."""

from __future__ import annotations

import math
from contextlib import AbstractContextManager

import torch

from transduce.config import DecodeConfig
from transduce.data.batching import iterate_batches, make_batches
from transduce.data.tokenizer import PAD
from transduce.decoding.corpus import search_corpus
from transduce.metrics.bleu import sacre_scores
from transduce.models.transformer import TransformerSeq2Seq
from transduce.train.corpus import Corpus
from transduce.train.distributed import DistContext, unshard
from transduce.train.loss import projected_label_smoothed_nll

SINGLE = DistContext()


@torch.no_grad()
def dev_loss(model: TransformerSeq2Seq, corpus: Corpus, max_tokens: int, epsilon: float,
             autocast: AbstractContextManager, dist: DistContext = SINGLE) -> dict[str, float]:
    """Label-smoothed loss and NLL per target token (bits), and perplexity, on the dev set
    (batches shared out over ranks, sums reduced)."""
    model.eval()
    src, tgt = corpus.valid_src, corpus.valid_tgt
    pairs = [i for i in range(len(src)) if src[i] and tgt[i]]
    src, tgt = [src[i] for i in pairs], [tgt[i] for i in pairs]
    batches = make_batches([len(s) for s in src], [len(t) for t in tgt], max_tokens=max_tokens,
                           seed=0, epoch=0, shuffle=False)
    loss_sum = nll_sum = tokens = 0.0
    device = next(model.parameters()).device
    for batch in iterate_batches(dist.shard(batches), src, tgt):
        batch = batch.to(device)
        with autocast:
            hidden = model.features(batch.src, batch.src_lens, batch.tgt_in)
        loss, nll = projected_label_smoothed_nll(hidden, model.output_weight, batch.tgt_out,
                                                 epsilon=epsilon, ignore_index=PAD)
        loss_sum, nll_sum, tokens = loss_sum + float(loss), nll_sum + float(nll), tokens + batch.num_tokens
    loss_sum, nll_sum, tokens = dist.sum([loss_sum, nll_sum, tokens], device)
    nll_nats = nll_sum / tokens
    return {"loss": round(loss_sum / tokens / math.log(2), 4), "nll": round(nll_nats / math.log(2), 4),
            "ppl": round(math.exp(nll_nats), 3)}


@torch.no_grad()
def dev_bleu(model: TransformerSeq2Seq, corpus: Corpus, decode: DecodeConfig, *, bf16: bool,
             beam: int = 1, dist: DistContext = SINGLE) -> dict[str, float | str]:
    """Greedy (or ``beam``) decoding of the dev source, detokenized, scored with sacreBLEU
    (sentences shared out over ranks, outputs gathered)."""
    model.eval()
    cfg = DecodeConfig(beam=beam, max_len_a=decode.max_len_a, max_len_b=decode.max_len_b,
                       len_penalty=decode.len_penalty, batch_size=128)
    device = next(model.parameters()).device
    hyps = search_corpus(model, dist.shard(corpus.valid_src), cfg, bf16=bf16, device=device)  # type: ignore[arg-type]
    mine = [h[0].tokens[::-1] if corpus.reverse_target else h[0].tokens for h in hyps]
    text = corpus.tokenizers.tgt.decode(unshard(dist.gather(mine), len(corpus.valid_src)))
    scores = sacre_scores(text, corpus.valid_tgt_text)
    exact = sum(h == r for h, r in zip(text, corpus.valid_tgt_text, strict=False)) / len(text)
    return {**scores, "exact_match": round(100 * exact, 2)}

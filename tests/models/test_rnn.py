"""RNN seq2seq: packed encoder == each sentence alone, incremental == teacher forced, state
reordering, coverage bookkeeping, scheduled sampling, and every attention type learning the
toy reverse task through the trainer, then searched (greedy and beam) from its exported folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from testkit import padded_batch, stepwise

from transduce.cli.config import load_recipe
from transduce.config import DataConfig, DecodeConfig, OptimConfig, RunConfig, TrainConfig
from transduce.data.tokenizer import PAD
from transduce.data.toy import toy_pairs
from transduce.decoding.beam import beam_search
from transduce.decoding.greedy import greedy_search
from transduce.models.rnn import RNNConfig, build_rnn, coverage_loss, tied_aliases
from transduce.nn.masks import padding_mask
from transduce.nn.rnn import final_states
from transduce.nn.rnn_attention import ATTENTIONS
from transduce.train.loss import CoverageSequenceLoss, SequenceLoss
from transduce.train.trainer import Trainer
from transduce.translate import Translator

V = 11
ROOT = Path(__file__).resolve().parents[2]


def _model(seed: int = 0, **overrides) -> torch.nn.Module:
    torch.manual_seed(seed)
    cfg = RNNConfig(**{"embed_dim": 8, "hidden": 12, "attention_dim": 6, "heads": 2, "encoder_layers": 2,
                       "decoder_layers": 2, "dropout": 0.0, **overrides})
    return build_rnn(cfg, V, V).eval()


def _inputs(seed: int = 1):
    return padded_batch(V, seed)


def _stepwise(model, src, src_lens, tgt_in):
    return stepwise(model, src, src_lens, tgt_in)


VARIANTS = [
    *({"attention": a, "coverage": a not in ("dot", "general")} for a in ATTENTIONS),
    {"cell": "gru", "attention": "location"},
    {"cell": "gru", "attention": "general", "bidirectional": False, "input_feeding": False},
    {"attention": "additive", "encoder_layers": 1, "decoder_layers": 3, "tie_embeddings": True},
]


@pytest.mark.parametrize("overrides", VARIANTS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_incremental_step_equals_teacher_forced_forward(overrides) -> None:
    model = _model(**overrides)
    src, src_lens, tgt_in = _inputs()
    with torch.no_grad():
        full = model(src, src_lens, tgt_in).float().log_softmax(-1)
        steps, states = _stepwise(model, src, src_lens, tgt_in)
        weights = model.align(src, src_lens, tgt_in)
    assert steps.shape == full.shape == (3, tgt_in.size(1), V)
    torch.testing.assert_close(steps, full, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.stack([s.weights for s in states], dim=1), weights)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_packed_encoder_equals_each_sentence_alone(cell: str, bidirectional: bool) -> None:
    model = _model(cell=cell, bidirectional=bidirectional)
    src, src_lens, _ = _inputs()
    src = src.masked_fill(src == PAD, 5)  # garbage on padding must not matter either
    with torch.no_grad():
        memory, lens = model.encode(src, src_lens)
        for b, n in enumerate(src_lens.tolist()):
            x = model.encoder.embedding(src[b : b + 1, :n])
            alone, final = model.encoder.rnn(x)  # unpacked reference: the bare RNN on one sentence
            torch.testing.assert_close(memory[b, :n], alone[0], atol=1e-6, rtol=0)
            h_n = final if cell == "gru" else final[0]  # (layers x directions, 1, H/dirs)
            top = torch.cat([h_n[-2], h_n[-1]], -1) if bidirectional else h_n[-1]
            torch.testing.assert_close(final_states(memory, lens, bidirectional)[b], top[0], atol=1e-6, rtol=0)
    assert torch.equal(lens, src_lens)
    assert torch.all(memory[~padding_mask(src_lens, 5)] == 0)


def test_source_padding_does_not_change_decoder_outputs() -> None:
    model = _model(attention="location", coverage=True)
    src, src_lens, tgt_in = _inputs()
    with torch.no_grad():
        batched = model(src, src_lens, tgt_in)
        for b, n in enumerate(src_lens.tolist()):
            alone = model(src[b : b + 1, :n], src_lens[b : b + 1], tgt_in[b : b + 1])
            torch.testing.assert_close(batched[b : b + 1], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attention", ["additive", "location", "multihead_additive"])
def test_coverage_is_running_sum_of_attention_weights(attention: str) -> None:
    model = _model(attention=attention, coverage=True)
    src, src_lens, tgt_in = _inputs()
    with torch.no_grad():
        _, states = _stepwise(model, src, src_lens, tgt_in)
    running = torch.zeros(3, 5)
    for state in states:
        running = running + state.weights
        torch.testing.assert_close(state.coverage, running)
    torch.testing.assert_close(states[-1].coverage.sum(-1), torch.full((3,), float(tgt_in.size(1))))


def test_coverage_loss_against_loops() -> None:
    weights = torch.rand(2, 4, 3).softmax(-1)
    tgt_mask = padding_mask(torch.tensor([4, 2]), 4)
    want = 0.0
    for b in range(2):
        for t in range(int(tgt_mask[b].sum())):
            cov = weights[b, :t].sum(0)
            want += sum(min(float(weights[b, t, s]), float(cov[s])) for s in range(3))
    torch.testing.assert_close(coverage_loss(weights, tgt_mask), torch.tensor(want))


def test_coverage_loss_term_in_training_loss_equals_hand_computation_and_trains_attention() -> None:
    """CoverageSequenceLoss - SequenceLoss = weight x sum over real target steps t and sources s of
    min(a_t,s, sum_{t'<t} a_t',s), looped by hand on the model's own weights; its gradient reaches
    the attention (whose coverage feature the loss is meant to train)."""
    model = _model(attention="additive", coverage=True)
    src, src_lens, tgt_in = _inputs()
    tgt_out = torch.cat([tgt_in[:, 1:], torch.full((3, 1), 3)], dim=1)  # (B, T)
    tgt_out[1, 4:] = PAD  # a shorter target: its padding steps must not count
    weight = 0.7
    with torch.no_grad():
        a = model.align(src, src_lens, tgt_in)  # (B, T, S)
    want = 0.0
    for b in range(3):
        for t in range(int((tgt_out[b] != PAD).sum())):
            want += sum(min(float(a[b, t, s]), float(a[b, :t, s].sum())) for s in range(int(src_lens[b])))
    plain, nll = SequenceLoss(model, epsilon=0.1, ignore_index=PAD)(src, src_lens, tgt_in, tgt_out)
    total, nll_cov = CoverageSequenceLoss(model, epsilon=0.1, ignore_index=PAD, weight=weight)(
        src, src_lens, tgt_in, tgt_out)
    assert want > 0.1
    torch.testing.assert_close(float((total - plain).detach()), weight * want, atol=1e-5, rtol=1e-5)
    assert torch.equal(nll, nll_cov)  # the reported NLL stays the NLL
    (total - plain).backward()
    grads = [p.grad for p in model.decoder.attention.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads if g is not None)


def test_state_reorder_equals_decoding_reordered_rows() -> None:
    model = _model(attention="location", coverage=True)
    src, src_lens, tgt_in = _inputs()
    indices, split = torch.tensor([2, 0, 0, 1]), 3
    with torch.no_grad():
        memory, memory_lens = model.encode(src, src_lens)
        state = model.init_state(memory, memory_lens)
        for t in range(split):
            _, state = model.step(tgt_in[:, t], memory, state)
        state, memory = state.reorder(indices), memory[indices]
        reordered = []
        for t in range(split, tgt_in.size(1)):
            lp, state = model.step(tgt_in[indices, t], memory, state)
            reordered.append(lp)
        want = _stepwise(model, src[indices], src_lens[indices], tgt_in[indices])[0][:, split:]
    torch.testing.assert_close(torch.stack(reordered, dim=1), want, atol=1e-5, rtol=0)


def test_scheduled_sampling_feeds_own_greedy_predictions() -> None:
    """With probability 1 every input after BOS is the previous argmax: the same as feeding
    ``step``'s argmax back by hand. Probability 0 is teacher forcing."""
    model = _model(scheduled_sampling=1.0).train()  # dropout is 0: training mode is deterministic
    src, src_lens, tgt_in = _inputs()
    with torch.no_grad():
        sampled = model(src, src_lens, tgt_in).log_softmax(-1)
        memory, memory_lens = model.encode(src, src_lens)
        state, tokens, want = model.init_state(memory, memory_lens), tgt_in[:, 0], []
        for _ in range(tgt_in.size(1)):
            lp, state = model.step(tokens, memory, state)
            want.append(lp)
            tokens = lp.argmax(-1)
        torch.testing.assert_close(sampled, torch.stack(want, dim=1), atol=1e-5, rtol=0)
        model.decoder.scheduled_sampling = 0.0
        forced = model(src, src_lens, tgt_in)
        assert torch.allclose(forced, model.eval()(src, src_lens, tgt_in))


def test_bf16_autocast_fused_loss_close_to_fp32() -> None:
    """Under autocast the features come back fp32, so the fused loss (which multiplies them by
    the fp32 output weight outside autocast) runs and stays close to the fp32 loss."""
    model = _model(attention="multihead_additive", coverage=True)
    src, src_lens, tgt_in = _inputs()
    losses = []
    for autocast in (None, torch.autocast("cpu", dtype=torch.bfloat16)):
        loss, _ = SequenceLoss(model, epsilon=0.1, ignore_index=PAD, autocast=autocast)(src, src_lens, tgt_in, tgt_in)
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        losses.append(loss.detach())
    torch.testing.assert_close(losses[1], losses[0], rtol=2e-2, atol=0)


def test_beam_of_one_equals_greedy() -> None:
    model = _model(attention="multihead_additive", coverage=True)
    src, src_lens, _ = _inputs()
    greedy = greedy_search(model, src, src_lens, max_len_a=1.0, max_len_b=3)
    beam = beam_search(model, src, src_lens, beam=1, max_len_a=1.0, max_len_b=3)
    assert [h.tokens for h in greedy] == [hyps[0].tokens for hyps in beam]


def test_shared_and_tied_embeddings_are_one_parameter() -> None:
    model = _model(share_embeddings=True, tie_embeddings=True)
    weight = model.encoder.embedding.weight
    assert weight is model.decoder.embedding.weight is model.output_weight
    assert sum(p is weight for p in model.parameters()) == 1
    assert torch.all(weight[PAD] == 0)
    assert tied_aliases(RNNConfig(share_embeddings=True, tie_embeddings=True)) == {
        "decoder.embedding.weight", "decoder.output.weight"}
    assert tied_aliases(RNNConfig()) == set()


def test_invalid_configs_fail_clearly() -> None:
    with pytest.raises(ValueError, match=r"share_embeddings.*7.*9"):
        build_rnn(RNNConfig(share_embeddings=True), 7, 9)
    with pytest.raises(ValueError, match="coverage"):
        build_rnn(RNNConfig(attention="dot", coverage=True), 7, 7)
    with pytest.raises(ValueError, match="even"):
        build_rnn(RNNConfig(hidden=7), 7, 7)
    with pytest.raises(ValueError, match="coverage_loss_weight needs model.coverage"):
        build_rnn(RNNConfig(coverage_loss_weight=1.0), 7, 7)
    with pytest.raises(ValueError, match="coverage_loss_weight must be >= 0"):
        build_rnn(RNNConfig(coverage=True, coverage_loss_weight=-1.0), 7, 7)
    with pytest.raises(ValueError, match="unknown RNN cell"):
        build_rnn(RNNConfig(cell="rnn"), 7, 7)


def test_recipe_loads_and_builds() -> None:
    cfg = load_recipe(ROOT / "recipes" / "tiny-reverse-rnn.yaml")
    assert cfg.task == "rnn_translation" and isinstance(cfg.model, RNNConfig)
    model = build_rnn(cfg.model, cfg.data.vocab_size, cfg.data.vocab_size, PAD)
    assert sum(p.numel() for p in model.parameters()) > 0


# ---- learning the toy reverse task -------------------------------------------------------------
@pytest.fixture(scope="module")
def reverse_data(tmp_path_factory) -> Path:
    """2000 training pairs of 2..6 letters (reversed), 200 dev pairs."""
    out = tmp_path_factory.mktemp("reverse")
    for split, n, seed in [("train", 2000, 11), ("val", 200, 12)]:
        pairs = toy_pairs(n, task="reverse", seed=seed, min_len=2, max_len=6)
        (out / f"{split}.src").write_text("".join(s + "\n" for s, _ in pairs))
        (out / f"{split}.tgt").write_text("".join(t + "\n" for _, t in pairs))
    return out


def _reverse_config(data: Path, attention: str) -> RunConfig:
    return RunConfig(
        task="rnn_translation",
        data=DataConfig(dir=str(data), src_lang="src", tgt_lang="tgt", tokenizer="word", vocab_size=32),
        model=RNNConfig(embed_dim=32, hidden=64, encoder_layers=1, decoder_layers=1, attention=attention,
                        heads=2, dropout=0.0, share_embeddings=True),
        optim=OptimConfig(lr=1.5e-2, warmup=50, schedule="inverse_sqrt"),
        train=TrainConfig(max_tokens=512, max_updates=250, eval_every=1000, log_every=50, threads=1, seed=1),
        decode=DecodeConfig(beam=1, max_len_a=1.0, max_len_b=3),
    )


# additive runs in the 10-minute suite; the other types (~30 s each on 2 cores) with ``-m slow``
@pytest.mark.parametrize("attention", [a if a == "additive" else pytest.param(a, marks=pytest.mark.slow)
                                       for a in ATTENTIONS])
def test_every_attention_learns_reverse_and_searches_from_export(attention: str, reverse_data: Path,
                                                                 tmp_path: Path) -> None:
    trainer = Trainer(_reverse_config(reverse_data, attention), tmp_path / "run", log=lambda _: None,
                      show_progress=False)
    out = trainer.fit()
    dev = [h for h in trainer.state.history if h.get("kind") == "valid"][-1]
    assert dev["exact_match"] >= 95.0, dev
    translator = Translator.load(out)  # export -> load_model_dir round trip, then search_corpus
    sources = (reverse_data / "val.src").read_text().splitlines()
    refs = (reverse_data / "val.tgt").read_text().splitlines()
    for beam in (1, 4):
        hyps = translator.translate(sources, beam=beam)
        exact = sum(h == r for h, r in zip(hyps, refs, strict=True)) / len(refs)
        assert exact >= 0.95, (beam, exact)
    nbest = translator.translate_nbest(sources[:3], nbest=2, beam=4)
    assert all(len(row) == 2 and row[0][1] >= row[1][1] for row in nbest)


def test_training_with_coverage_loss_runs(reverse_data: Path, tmp_path: Path) -> None:
    cfg = _reverse_config(reverse_data, "additive")
    cfg.model.coverage, cfg.model.coverage_loss_weight = True, 1.0
    cfg.train.max_updates, cfg.train.eval_every, cfg.train.log_every, cfg.train.eval_bleu = 6, 6, 3, False
    cfg.train.label_smoothing = 0.0  # so the logged loss exceeds the NLL by the coverage term alone
    trainer = Trainer(cfg, tmp_path / "run", log=lambda _: None, show_progress=False)
    assert isinstance(trainer.step_module, CoverageSequenceLoss)
    trainer.fit()
    train = [h for h in trainer.state.history if h.get("kind") == "train"]
    assert len(train) == 2 and all(h["loss"] > h["nll"] > 0 for h in train)


def test_info_describes_an_rnn_model(tmp_path: Path, capsys) -> None:
    from transduce.cli.main import main
    from transduce.data.toy import write_toy

    data = write_toy(tmp_path / "data", task="reverse", train=200, valid=10, test=0)
    root = Path(__file__).resolve().parents[2]
    assert main(["train", str(root / "recipes" / "tiny-reverse-rnn.yaml"), "--out", str(tmp_path / "run"),
                 "--no-progress", "--set", f"data.dir={data}", "--set", "train.max_updates=2",
                 "--set", "train.eval_every=2"]) == 0
    capsys.readouterr()
    assert main(["info", str(tmp_path / "run")]) == 0
    assert "encoder-decoder" in capsys.readouterr().out

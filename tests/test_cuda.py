"""CUDA paths (skipped without a GPU, so CI never runs them; run on a lent GPU): mixed-precision
training, streaming Conformer and cached beam search agree with their CPU/full-context references."""

from pathlib import Path

import pytest
import torch

from transduce import Translator
from transduce.cli.main import main
from transduce.data.toy import write_toy
from transduce.nn.conformer import ConformerEncoder

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def no_tf32():
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


@pytest.mark.parametrize(("chunk", "left"), [(1, -1), (4, 0), (3, 2), (16, 1)])
def test_streaming_conformer_on_cuda_equals_masked_full_forward_and_cpu(chunk: int, left: int) -> None:
    torch.manual_seed(0)
    enc = ConformerEncoder(20, 32, heads=4, layers=3, ffn_dim=64, kernel_size=5, subsampling=4, dropout=0.0,
                           causal=True, subsampling_channels=8).cuda().eval()
    feats = torch.randn(2, 150, 20, device="cuda")
    lens = torch.tensor([150, 150], device="cuda")
    full, _ = enc.encode(feats, lens, chunk_size=chunk, left_chunks=left)
    state, outs, start = enc.init_state(2, "cuda"), [], 0
    for n in [7, 0, 13, 22, 5, 40]:
        y, state = enc.forward_chunk(feats[:, start : start + n], state, chunk_size=chunk, left_chunks=left)
        outs.append(y)
        start += n
    outs.append(enc.forward_chunk(feats[:, start:], state, chunk_size=chunk, left_chunks=left, final=True)[0])
    torch.testing.assert_close(torch.cat(outs, dim=1), full, atol=1e-5, rtol=1e-5)
    on_cpu = enc.cpu().encode(feats.cpu(), lens.cpu(), chunk_size=chunk, left_chunks=left)[0]
    torch.testing.assert_close(full.cpu(), on_cpu, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["multi30k-en-de", "multi30k-en-de-best"])  # one model; the ensemble preset
def test_bundled_translation_model_beam_search_on_cuda_equals_cpu(name: str) -> None:
    sentences = [s for s in (ROOT / "examples" / "en-de.en").read_text().splitlines() if s.strip()]
    model = ROOT / "models" / name
    on_cpu = Translator.load(model).translate(sentences)
    assert Translator.load(model, device="cuda").translate(sentences) == on_cpu


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_tiny_copy_trains_on_cuda(precision: str, tmp_path: Path) -> None:
    data = write_toy(tmp_path / "data", task="reverse", test=0)  # `transduce data toy` sizes: 5000 train, 200 val
    run = tmp_path / "run"
    assert main(["train", str(ROOT / "recipes" / "tiny-copy.yaml"), "--out", str(run), "--no-progress",
                 "--set", f"data.dir={data}", "--set", "train.device=cuda", "--set", f"train.precision={precision}",
                 "--set", "train.max_updates=600", "--set", "train.eval_every=300"]) == 0
    sources = (data / "val.src").read_text().splitlines()
    refs = (data / "val.tgt").read_text().splitlines()
    hyps = Translator.load(run, device="cuda").translate(sources)
    assert sum(h == r for h, r in zip(hyps, refs, strict=True)) >= 0.9 * len(refs)

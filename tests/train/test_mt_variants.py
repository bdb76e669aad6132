"""benchmarks/mt_variants.py: runs side by side, one stopped at the deadline, chosen on val, test once."""

import gzip
import importlib.util
import json
import sys
from pathlib import Path

from transduce.data.toy import toy_pairs

ROOT = Path(__file__).resolve().parents[2]


def load_script():
    spec = importlib.util.spec_from_file_location("mt_variants", ROOT / "benchmarks" / "mt_variants.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_variants_train_side_by_side_and_are_scored(tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for offset, (split, n) in enumerate([("train", 400), ("val", 20), ("test_2016_flickr", 20)]):
        pairs = toy_pairs(n, task="reverse", seed=offset)
        for lang, side in (("en", 0), ("de", 1)):
            with gzip.open(data / f"{split}.{lang}.gz", "wt") as f:
                f.writelines(p[side] + "\n" for p in pairs)
    langs = "data.src_lang=en,data.tgt_lang=de,train.eval_bleu=false,train.log_every=5"
    mt = load_script()
    rc = mt.main(["--data", str(data), "--out", str(tmp_path / "out"), "--seconds", "20",
                  "--variant", f"t=recipes/tiny-copy.yaml,{langs},train.max_updates=20,train.eval_every=10",
                  # stopped by the deadline (SIGTERM -> checkpoint), never by max_updates
                  "--variant", f"r=recipes/tiny-reverse-rnn.yaml,{langs},train.max_updates=100000,train.eval_every=10",
                  "--grid-transformer", "1x1.0,2x1.0", "--grid-rnn", "1x1.0", "--jobs", "2"])
    assert rc == 0
    results = {r["name"]: r for r in map(json.loads, (tmp_path / "out" / "results.jsonl").read_text().splitlines())}
    assert results["t"]["updates"] == 20 and results["r"]["updates"] < 100000
    for name, lasts in (("t", {1, 2}), ("r", {1})):
        r = results[name]
        assert r["error"] is None and r["params"] > 0 and 0 <= r["test"] <= 100
        assert {row["last"] for row in r["grid"]} == lasts
        best = max(r["grid"], key=lambda row: row["val"])
        assert (r["last"], r["lp"], r["val"]) == (best["last"], best["lp"], best["val"])
    table = capsys.readouterr().out
    assert table.count("\n| t |") == 1 and table.count("\n| r |") == 1

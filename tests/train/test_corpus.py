"""Training text from several comma-separated prefixes (``data.train=train,train.kd``)."""

import gzip

import pytest

from transduce.config import DataConfig
from transduce.data.text import DataError
from transduce.train.corpus import read_training_pairs


def write(path, lines):
    text = "".join(line + "\n" for line in lines)
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")


@pytest.fixture
def folder(tmp_path):
    write(tmp_path / "train.en", ["a dog", "two men"])
    write(tmp_path / "train.de", ["ein Hund", "zwei Männer"])
    write(tmp_path / "train.kd.en.gz", ["a dog", "two men", "a cat"])
    write(tmp_path / "train.kd.de", ["ein Hund .", "zwei Herren", "eine Katze"])
    return tmp_path


def test_several_prefixes_are_read_one_after_another(folder):
    cfg = DataConfig(dir=str(folder), train=" train , train.kd")
    assert read_training_pairs(cfg) == (["a dog", "two men", "a dog", "two men", "a cat"],
                                        ["ein Hund", "zwei Männer", "ein Hund .", "zwei Herren", "eine Katze"])
    swapped = read_training_pairs(DataConfig(dir=str(folder), train="train.kd,train"))
    assert swapped[1][:2] == ["ein Hund .", "zwei Herren"]
    assert read_training_pairs(DataConfig(dir=str(folder))) == (["a dog", "two men"], ["ein Hund", "zwei Männer"])


def test_prefix_errors_name_the_field_or_file(folder):
    with pytest.raises(DataError, match=r"data.train='train,' has an empty prefix"):
        read_training_pairs(DataConfig(dir=str(folder), train="train,"))
    with pytest.raises(DataError, match=r"train.bt.en: no such file"):
        read_training_pairs(DataConfig(dir=str(folder), train="train,train.bt"))
    write(folder / "train.kd.de", ["ein Hund ."])
    with pytest.raises(DataError, match=r"train.kd.en.gz has 3 lines but .*train.kd.de has 1"):
        read_training_pairs(DataConfig(dir=str(folder), train="train,train.kd"))

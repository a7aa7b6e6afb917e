"""The char tokenizer and the 4-row toy dataset the trainer tests share (one per module)."""

import pytest

from iwsft.model.tiny_lm import build_char_tokenizer
from support import toy_dataset


@pytest.fixture(scope="module")
def tokenizer():
    return build_char_tokenizer()


@pytest.fixture(scope="module")
def dataset(tokenizer):
    return toy_dataset(tokenizer, n=4)

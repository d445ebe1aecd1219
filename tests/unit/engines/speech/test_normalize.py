"""The speech text normaliser: numbers, money, percentages, abbreviations; times and dates kept."""

from __future__ import annotations

import pytest
from support.speech import word_error_rate

from homeport.engines.speech.normalize import cardinal, normalize_text, ordinal, words_for_comparison


@pytest.mark.parametrize(("text", "expected"), [
    ("12 apples", "twelve apples"),
    ("1,250 people", "one thousand two hundred fifty people"),
    ("pi is 3.14", "pi is three point one four"),
    ("in 1999 and 2024", "in nineteen ninety-nine and twenty twenty-four"),
    ("in 2005", "in two thousand five"),
    ("the 3rd, 21st and 100th", "the third, twenty-first and one hundredth"),
    ("$9.99 each", "nine dollars and ninety-nine cents each"),
    ("$1", "one dollar"),
    ("£5 or €0.50", "five pounds or fifty cents"),
    ("$3.2 billion", "three point two billion dollars"),
    ("12% more", "twelve percent more"),
    ("e.g. cats, i.e. pets, etc.", "for example cats, that is pets, et cetera"),
    ("salt & pepper", "salt and pepper"),
    ("-5 degrees", "minus five degrees"),
])
def test_normalises(text, expected):
    assert normalize_text(text) == expected


@pytest.mark.parametrize("text", ["at 7:30 pm", "on 10/12/2019", "on 2019-10-12", "call 555-1234", "an mp3 in 4K",
                                  "3.5 km", "20°C"])
def test_leaves_what_the_synthesis_engine_reads_itself(text):
    assert normalize_text(text) == text


def test_number_words():
    assert cardinal(0) == "zero"
    assert cardinal(1_000_001) == "one million one"
    assert [ordinal(n) for n in (1, 2, 3, 5, 12, 20, 42)] == ["first", "second", "third", "fifth", "twelfth",
                                                               "twentieth", "forty-second"]


def test_comparison_words_and_word_error_rate():
    assert words_for_comparison("She paid $9, on the 3rd!") == ["she", "paid", "nine", "dollars", "on", "the", "third"]
    assert word_error_rate("On the 3rd of May.", "on the third of may") == 0
    assert word_error_rate("one two three four", "one too three") == 0.5

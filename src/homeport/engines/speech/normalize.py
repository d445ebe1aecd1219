"""A light text normaliser for speech: numbers, money, percentages and common abbreviations as
words. Used before synthesis (a TTS model reads words better than symbols) and by the tests to
compare transcripts with the text spoken ("3rd" and "third" are the same word to a listener).

Deliberately conservative: digits that are part of a time (7:30), a date (10/12/2019, 2019-10-12),
a range, a phone number or a word with letters (mp3, 4K) are left as they are, for the synthesis
engine's own front end (hibari reads those itself).
"""

from __future__ import annotations

import re

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_ORDINAL_WORDS = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
                  "nine": "ninth", "twelve": "twelfth"}
_CURRENCIES = {"$": ("dollar", "dollars", "cent", "cents"), "£": ("pound", "pounds", "penny", "pence"),
               "€": ("euro", "euros", "cent", "cents")}
_MULTIPLIERS = {"k": "thousand", "m": "million", "b": "billion", "bn": "billion", "thousand": "thousand",
                "million": "million", "billion": "billion", "trillion": "trillion"}
ABBREVIATIONS = {"e.g.": "for example", "i.e.": "that is", "etc.": "et cetera", "vs.": "versus",
                 "approx.": "approximately", "a.m.": "AM", "p.m.": "PM", "&": "and"}

_NUM = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
# no letter, digit, or time/date/range punctuation on either side
_FREE_BEFORE = r"(?<![\w:/\-.,])"
_FREE_AFTER = r"(?![\w:/]|[.,]\d|-\d)"
_RE_MONEY = re.compile(rf"(?<![\w:/\-.,$£€])([$£€])\s?({_NUM})"
                       rf"(?:\s?(thousand|million|billion|trillion|bn|[kmb])\b)?(?![\w:/]|[.,]\d)", re.IGNORECASE)
_RE_PERCENT = re.compile(rf"{_FREE_BEFORE}({_NUM})\s?%")
_RE_ORDINAL = re.compile(rf"{_FREE_BEFORE}(\d+)(st|nd|rd|th)\b", re.IGNORECASE)
# a number before a unit ("3.5 km", "20°") is left to the synthesis engine, which knows units
_UNIT_AFTER = r"(?!\s?(?:km|cm|mm|kg|mg|lbs?|oz|ft|mi|ml|hrs?|mins?|secs?|mph|kph|kmh|kb|mb|gb|tb)\b|\s?°)"
_RE_NUMBER = re.compile(rf"{_FREE_BEFORE}(-?)({_NUM}){_FREE_AFTER}{_UNIT_AFTER}", re.IGNORECASE)
_RE_ABBREV = re.compile("|".join(rf"(?<!\w){re.escape(a)}" + (r"(?!\w)" if a[-1].isalnum() else "")
                                 for a in sorted(ABBREVIATIONS, key=len, reverse=True)), re.IGNORECASE)


def cardinal(n: int) -> str:
    """Words for an integer: 1250 → "one thousand two hundred fifty"."""
    if n < 0:
        return "minus " + cardinal(-n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else "-" + _ONES[n % 10])
    if n < 1000:
        return _ONES[n // 100] + " hundred" + ("" if n % 100 == 0 else " " + cardinal(n % 100))
    for scale, name in _SCALES:
        if n >= scale:
            if n // scale >= 1000 and scale == 10**12:
                return " ".join(_ONES[int(d)] for d in str(n))  # past trillions: digit by digit
            rest = n % scale
            return cardinal(n // scale) + " " + name + ("" if rest == 0 else " " + cardinal(rest))
    raise AssertionError(n)


def ordinal(n: int) -> str:
    """1 → "first", 21 → "twenty-first", 100 → "one hundredth"."""
    words = cardinal(n)
    head, sep, last = words.rpartition("-") if "-" in words.split(" ")[-1] else words.rpartition(" ")
    if last in _ORDINAL_WORDS:
        last = _ORDINAL_WORDS[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return head + sep + last


def number(text: str, *, year_style: bool = True) -> str:
    """Words for a number as written: "1,250", "3.14", "2024" (a year, when `year_style`)."""
    whole, _, fraction = text.replace(",", "").partition(".")
    n = int(whole)
    if year_style and "," not in text and not fraction and len(whole) == 4 and 1100 <= n <= 2099 \
            and n % 1000 >= 10 and not 2000 <= n <= 2009:
        high, low = divmod(n, 100)
        return cardinal(high) + " " + ("hundred" if low == 0 else ("oh " + _ONES[low] if low < 10 else cardinal(low)))
    words = cardinal(n)
    if fraction:
        words += " point " + " ".join(_ONES[int(d)] for d in fraction)
    return words


def _money(m: re.Match) -> str:
    one, many, sub_one, sub_many = _CURRENCIES[m.group(1)]
    amount, multiplier = m.group(2), m.group(3)
    if multiplier:
        return f"{number(amount, year_style=False)} {_MULTIPLIERS[multiplier.lower()]} {many}"
    whole, _, cents = amount.replace(",", "").partition(".")
    units = int(whole)
    words = f"{cardinal(units)} {one if units == 1 else many}"
    if cents:
        sub = int((cents + "0")[:2])
        if sub:
            words = (f"{words} and " if units else "") + f"{cardinal(sub)} {sub_one if sub == 1 else sub_many}"
    return words


def _abbreviation(m: re.Match) -> str:
    return ABBREVIATIONS[m.group(0).lower()]


def normalize_text(text: str) -> str:
    """Money, percentages, ordinals, plain numbers and a few abbreviations as words."""
    text = _RE_ABBREV.sub(_abbreviation, text)
    text = _RE_MONEY.sub(_money, text)
    text = _RE_PERCENT.sub(lambda m: number(m.group(1), year_style=False) + " percent", text)
    text = _RE_ORDINAL.sub(lambda m: ordinal(int(m.group(1))), text)
    text = _RE_NUMBER.sub(lambda m: ("minus " if m.group(1) else "") + number(m.group(2)), text)
    return text


def words_for_comparison(text: str) -> list[str]:
    """Lowercase words, numbers spelled out, punctuation and hyphens gone (for word error rates)."""
    text = normalize_text(text).lower().replace("-", " ")
    return re.findall(r"[a-z0-9']+", text.replace("’", "'"))

import pytest

from homeport.services.text.stop_strings import StopMatcher

CASES = [
    # (text, stops, expected output, stopped)
    ("Hello world. The end", ["The end"], "Hello world. ", True),
    ("Hello world.", ["###"], "Hello world.", False),
    ("a<end_of_turn>b", ["<end_of_turn>"], "a", True),
    ("aaab", ["aab"], "a", True),
    ("x\n### Instruction: y", ["\n### Instruction:"], "x", True),
    ("partial <end_of", ["<end_of_turn>"], "partial <end_of", False),
    ("two stops: B then A", ["A", "B"], "two stops: ", True),
    ("naïve café 日本語 STOP", ["STOP"], "naïve café 日本語 ", True),
    ("no stops at all", [], "no stops at all", False),
    ("overlap abcabd", ["abd"], "overlap abc", True),
]


def run(pieces, stops):
    matcher = StopMatcher(stops)
    out = []
    for piece in pieces:
        text, stopped = matcher.push(piece)
        out.append(text)
        if stopped:
            return "".join(out), True
    out.append(matcher.flush())
    return "".join(out), False


@pytest.mark.parametrize("text,stops,expected,stopped", CASES)
def test_whole_text(text, stops, expected, stopped):
    assert run([text], stops) == (expected, stopped)


@pytest.mark.parametrize("text,stops,expected,stopped", CASES)
def test_split_at_every_boundary(text, stops, expected, stopped):
    for cut in range(len(text) + 1):
        assert run([text[:cut], text[cut:]], stops) == (expected, stopped), cut


@pytest.mark.parametrize("text,stops,expected,stopped", CASES)
def test_one_character_at_a_time_never_leaks(text, stops, expected, stopped):
    matcher = StopMatcher(stops)
    emitted = ""
    for char in text:
        piece, hit = matcher.push(char)
        emitted += piece
        for stop in stops:
            assert stop not in emitted
        if hit:
            break
    else:
        emitted += matcher.flush()
    assert emitted == expected


def test_held_text_is_released_when_it_turns_out_not_to_be_a_stop():
    matcher = StopMatcher(["</s>"])
    assert matcher.push("a</") == ("a", False)
    assert matcher.push("x") == ("</x", False)

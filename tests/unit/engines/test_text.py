from homeport.engines.text import IncrementalUtf8


def test_split_multibyte_characters_are_held_back_until_complete():
    data = "é日本🙂".encode()
    decoder = IncrementalUtf8()
    outputs = [decoder.push(bytes([b])) for b in data]
    assert "".join(outputs) + decoder.flush() == "é日本🙂"
    assert all("\ufffd" not in o for o in outputs)
    # nothing is emitted until a character is whole: 🙂 is 4 bytes, only its last one emits it
    assert outputs[-4:] == ["", "", "", "🙂"]


def test_invalid_bytes_become_replacement_characters_at_the_end():
    decoder = IncrementalUtf8()
    assert decoder.push(b"ok\xe6\x97") == "ok"
    assert decoder.flush() == "\ufffd"

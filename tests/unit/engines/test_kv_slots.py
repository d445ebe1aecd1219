"""How many KV cells the slots hold together when some share cells (llama_memory_seq_cp)."""

from homeport.engines.llama_cpp.prefix import Slot, held_cells


def test_cells_taken_from_another_slot_count_once():
    a, b = Slot(0), Slot(1)
    a.extend(range(100))
    b.take(a, 60)
    assert b.tokens == list(range(60)) and held_cells([a, b]) == 100
    b.extend([7] * 10)  # b's own cells past the shared 60
    a.extend([8] * 5)
    assert held_cells([a, b]) == 115 and held_cells([b]) == 70


def test_a_slot_cut_below_what_another_holds_writes_new_cells():
    a, b = Slot(0), Slot(1)
    a.extend(range(100))
    b.take(a, 80)
    a.truncate(50)
    a.extend([9] * 40)  # positions 50-89 of a: new cells, while b still holds the old 50-79
    assert held_cells([a, b]) == 80 + 40
    b.clear()
    assert held_cells([a, b]) == 90 and not b.runs


def test_a_slot_nobody_shares_goes_on_writing_the_same_cells_after_a_cut():
    a = Slot(0)
    a.extend(range(10))
    for _ in range(50):  # speculative decoding: drafts written, the rejected ones cut off
        a.extend([1, 2, 3])
        a.truncate(len(a.tokens) - 2, exclusive=True)
    assert held_cells([a]) == len(a.tokens) == 60 and len(a.runs) == 1


def test_taking_from_a_slot_that_itself_borrowed_shares_the_first_slots_cells():
    a, b, c = Slot(0), Slot(1), Slot(2)
    a.extend(range(64))
    b.take(a, 64)
    b.extend(range(64, 128))
    c.take(b, 100)
    assert held_cells([a, b, c]) == 128
    a.clear()
    b.clear()
    assert held_cells([a, b, c]) == 100


def test_a_stored_slot_holds_no_cells_but_keeps_its_tokens_until_cut():
    a, b = Slot(0), Slot(1)
    a.extend(range(100))
    b.take(a, 40)
    a.store(b"cells", pos_min=0)  # its cells copied out and removed from the cache
    assert a.tokens == list(range(100)) and not a.runs and held_cells([a, b]) == 40
    a.extend([5])  # (a restore writes new cells: a new block)
    assert held_cells([a, b]) == 41
    a.truncate(0)
    assert a.stored is None and not a.tokens

"""Prefill pieces end before a prompt's end-of-turn tokens (a shared system prompt is then reused
to its end), but never leave a piece shorter than MIN_PIECE."""

from __future__ import annotations

import numpy as np

from homeport.engines.llama_cpp.prefix import piece_boundary, turn_ends

EOG = np.array([2, 7])


def test_each_turn_end_far_enough_from_the_last_boundary_ends_a_piece():
    prompt = [1] * 34 + [2] + [1] * 10 + [7] + [1] * 20 + [2]
    assert turn_ends(prompt, EOG, 128) == [34, 66]  # 45 is 11 after 34: too close


def test_a_prompt_of_end_tokens_is_not_read_a_token_per_step():
    assert turn_ends([2] * 300, EOG, 128) == [16, 32, 48, 64, 80, 96, 112, 144, 160, 176, 192, 208, 224, 240, 272, 288]


def test_chunk_boundaries_count_as_boundaries():
    assert turn_ends([1] * 130 + [2], EOG, 128) == []  # 2 after the boundary at 128
    assert turn_ends([1] * 150 + [2], EOG, 128) == [150]


def test_no_end_tokens_or_no_eog_set():
    assert turn_ends([1, 3, 4, 5] * 40, EOG, 128) == []
    assert turn_ends([2] * 40, np.array([], dtype=np.intp), 128) == []


def test_reuse_is_cut_back_to_the_last_chunk_multiple_or_turn_end_before_it():
    assert piece_boundary(300, 128, []) == 256
    assert piece_boundary(300, 128, [40, 290]) == 290
    assert piece_boundary(290, 128, [40, 290]) == 256  # the end-of-turn token itself is not held
    assert piece_boundary(100, 128, [40, 290]) == 40
    assert piece_boundary(30, 128, [40]) == 0

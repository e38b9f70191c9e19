"""Attention masks: shapes, conventions (True = attend) and values against explicit loops."""

import numpy as np
import pytest

from lmjax.layers import masks


def test_causal_mask_is_lower_triangular():
    mask = np.asarray(masks.causal_mask(4))
    assert mask.shape == (1, 1, 4, 4) and mask.dtype == np.bool_
    np.testing.assert_array_equal(mask[0, 0], np.tril(np.ones((4, 4), bool)))


def test_causal_mask_from_cache_slots():
    # Two queries at slots 3, 4 of a 6-slot cache.
    mask = np.asarray(masks.causal_mask_from_indices(np.array([3, 4]), np.arange(6)))
    assert mask.shape == (1, 1, 2, 6)
    np.testing.assert_array_equal(mask[0, 0, 0], [1, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(mask[0, 0, 1], [1, 1, 1, 1, 1, 0])


def test_padding_mask_needs_both_real():
    valid = np.array([[1, 1, 0], [0, 1, 1]])
    mask = np.asarray(masks.padding_mask(valid))
    assert mask.shape == (2, 1, 3, 3)
    for b in range(2):
        for q in range(3):
            for k in range(3):
                assert mask[b, 0, q, k] == bool(valid[b, q] and valid[b, k])


def test_key_padding_mask_leaves_queries_free():
    mask = np.asarray(masks.key_padding_mask(np.array([[0, 1, 1]]), q_length=2))
    assert mask.shape == (1, 1, 2, 3)
    np.testing.assert_array_equal(mask[0, 0], [[0, 1, 1], [0, 1, 1]])


def test_segment_mask_same_nonzero_document():
    segments = np.array([[1, 1, 2, 2, 0]])
    mask = np.asarray(masks.segment_mask(segments))
    expected = np.array([[s_q == s_k and s_q != 0 for s_k in segments[0]] for s_q in segments[0]])
    np.testing.assert_array_equal(mask[0, 0], expected)


def test_local_band_and_disabled_band():
    index = np.arange(5)
    band = np.asarray(masks.local_band_mask(index, index, 2))[0, 0]
    expected = np.abs(index[:, None] - index[None, :]) < 2
    np.testing.assert_array_equal(band, expected)
    causal_band = np.asarray(masks.combine_masks(masks.causal_mask(5), band))[0, 0]
    # Query 4 sees itself and the one key before it.
    np.testing.assert_array_equal(causal_band[4], [0, 0, 0, 1, 1])
    assert np.asarray(masks.local_band_mask(index, index, 0)).all()


def test_combine_masks_broadcasts_and_skips_none():
    assert masks.combine_masks(None, None) is None
    causal = masks.causal_mask(3)  # [1, 1, 3, 3]
    pad = masks.padding_mask(np.array([[1, 1, 0], [1, 1, 1]]))  # [2, 1, 3, 3]
    combined = np.asarray(masks.combine_masks(causal, None, pad))
    assert combined.shape == (2, 1, 3, 3)
    np.testing.assert_array_equal(combined, np.asarray(causal) & np.asarray(pad))


@pytest.mark.parametrize("with_segments", [False, True])
def test_decoder_mask(with_segments):
    segments = np.array([[1, 1, 2, 0]]) if with_segments else None
    mask = np.asarray(masks.decoder_mask(4, segments))
    expected = np.tril(np.ones((4, 4), bool))
    if with_segments:
        expected = expected & np.asarray(masks.segment_mask(segments))[0, 0]
        assert not mask[0, 0, 2, 1]  # document 2 cannot see document 1
    np.testing.assert_array_equal(mask[0, 0], expected)

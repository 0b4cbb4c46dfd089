"""GPU slot claims through lock files, and the CPU fallback."""

from __future__ import annotations

import threading

import pytest
import torch

from advseg.devices import claim_device, claim_slot


def test_nested_claims_get_different_slots(tmp_path):
    with claim_slot(2, poll_seconds=0.01, lock_dir=tmp_path) as first:
        with claim_slot(2, poll_seconds=0.01, lock_dir=tmp_path) as second:
            assert {first, second} == {0, 1}
    # both released: the first slot is free again
    with claim_slot(2, poll_seconds=0.01, lock_dir=tmp_path) as again:
        assert again == 0


def test_third_claim_waits_for_a_release(tmp_path):
    got: list[int] = []
    acquired, release = threading.Event(), threading.Event()

    def third():
        with claim_slot(2, poll_seconds=0.01, lock_dir=tmp_path) as index:
            got.append(index)
            acquired.set()
            release.wait(10)

    first_claim = claim_slot(2, poll_seconds=0.01, lock_dir=tmp_path)
    second_claim = claim_slot(2, poll_seconds=0.01, lock_dir=tmp_path)
    first = first_claim.__enter__()
    second = second_claim.__enter__()
    thread = threading.Thread(target=third, daemon=True)
    try:
        thread.start()
        assert not acquired.wait(0.3), "a third claim got a slot while both were held"
        second_claim.__exit__(None, None, None)
        assert acquired.wait(5), "the third claim did not get the released slot"
        assert got == [second]
    finally:
        release.set()
        thread.join(5)
        first_claim.__exit__(None, None, None)
    assert not thread.is_alive()
    assert first != second


def test_one_slot_is_exclusive(tmp_path):
    with claim_slot(1, poll_seconds=0.01, lock_dir=tmp_path) as index:
        assert index == 0
        result: list[int] = []
        thread = threading.Thread(target=_claim_once, args=(tmp_path, result), daemon=True)
        thread.start()
        thread.join(0.2)
        assert result == []  # still waiting
    thread.join(5)
    assert result == [0]


def _claim_once(lock_dir, result):
    with claim_slot(1, poll_seconds=0.01, lock_dir=lock_dir) as index:
        result.append(index)


@pytest.mark.skipif(torch.cuda.device_count() > 0, reason="a CUDA device is present")
def test_claim_device_is_cpu_without_cuda():
    with claim_device(poll_seconds=0.01) as device:
        assert device == torch.device("cpu")

"""The attribution memory (bridge/delivery/memory.py) on a real Redis: what recording leaves,
what a later payment finds, expiry by Redis's clock, and the compact encoding it relies on."""

from __future__ import annotations

import time

import pytest
import redis

from bridge.conversion import Conversion, Handles
from bridge.delivery import intake, memory
from bridge.delivery.ledger import Ledger
from bridge.delivery.memory import Memory

SUB, CUS, OTHER_CUS = "stripe:sub:sub_1", "stripe:cus:cus_1", "stripe:cus:cus_2"


def sale(
    external_id: str,
    *,
    sid: str | None = None,
    customer: tuple[str, ...] = (SUB, CUS),
    payment: tuple[str, ...] = (),
    **ids: str,
) -> Conversion:
    return Conversion(
        external_id,
        "SALE",
        4990,
        "EUR",
        session_id=sid,
        customer_email_hash=None if sid or ids else "ab" * 32,
        handles=Handles(customer, payment),
        **ids,  # type: ignore[arg-type]
    )


@pytest.fixture()
def ledger(redis_url: str) -> Ledger:
    return Ledger(redis.Redis.from_url(redis_url))


def record(ledger: Ledger, conversion: Conversion) -> intake.IntakeResult:
    return intake.accept_conversion(
        ledger,
        conversion,
        provider="stripe",
        event_id=f"evt_{conversion.external_id}",
        received_at=time.time(),
    )


def payload(ledger: Ledger, external_id: str) -> dict[str, object]:
    import json

    return json.loads((ledger.get(external_id) or {})["payload"])


def test_a_renewal_without_ids_gets_the_remembered_ones(ledger: Ledger) -> None:
    record(ledger, sale("cs_1", sid="rcs_1", affiliate_code="jane10"))
    renewal = sale("in_2", customer=(SUB,))
    assert isinstance(record(ledger, renewal), intake.Accepted)
    sent = payload(ledger, "in_2")
    assert (sent["sessionId"], sent["affiliateCode"]) == ("rcs_1", "jane10")
    assert sent["metadata"] == {"attributedFrom": "cs_1"}
    # Its own email hash still goes with it.
    assert sent["customerEmailHash"] == "ab" * 32


def test_own_ids_always_win(ledger: Ledger) -> None:
    record(ledger, sale("cs_1", sid="rcs_1"))
    assert record(ledger, sale("in_2", click_id="clk_own"))
    sent = payload(ledger, "in_2")
    assert sent["clickId"] == "clk_own" and "sessionId" not in sent
    assert "attributedFrom" not in sent.get("metadata", {})


def test_the_subscription_comes_before_the_customer(ledger: Ledger) -> None:
    record(ledger, sale("cs_old", sid="rcs_customer", customer=(CUS,)))
    record(ledger, sale("cs_sub", sid="rcs_subscription", customer=("stripe:sub:sub_9",)))
    found = ledger.memory.attribute(sale("in_3", customer=("stripe:sub:sub_9", CUS)))
    assert (found.session_id, found.attributed_from) == ("rcs_subscription", "cs_sub")


def test_a_known_customer_buying_again_is_attributed_from_the_customer(ledger: Ledger) -> None:
    record(ledger, sale("cs_first", sid="rcs_1", customer=(CUS,)))
    found = ledger.memory.attribute(sale("cs_second", customer=(CUS,)))
    assert (found.session_id, found.attributed_from) == ("rcs_1", "cs_first")


def test_attributed_from_keeps_naming_the_sale_that_carried_the_ids(ledger: Ledger) -> None:
    record(ledger, sale("cs_1", sid="rcs_1"))
    for n in range(2, 5):
        record(ledger, sale(f"in_{n}", customer=(SUB,)))
    assert payload(ledger, "in_4")["metadata"] == {"attributedFrom": "cs_1"}


def test_a_new_sale_with_its_own_ids_takes_the_customer_over(ledger: Ledger) -> None:
    record(ledger, sale("cs_1", sid="rcs_1", customer=(CUS,)))
    record(ledger, sale("cs_2", sid="rcs_2", customer=(CUS,)))
    assert ledger.memory.attribute(sale("x", customer=(CUS,))).session_id == "rcs_2"


def test_nobody_known_and_no_email_is_unattributed(ledger: Ledger) -> None:
    unknown = Conversion("in_x", "SALE", 100, "EUR", handles=Handles((OTHER_CUS,), ()))
    assert isinstance(record(ledger, unknown), intake.Unattributed)
    assert ledger.get("in_x") is None


def test_an_email_only_sale_names_no_affiliate_for_later(ledger: Ledger) -> None:
    record(ledger, sale("cs_mail"))  # attributed by its email hash only
    assert ledger.memory.recall((SUB, CUS)) is None


def test_payment_handles_name_their_conversion(ledger: Ledger) -> None:
    record(ledger, sale("in_7", sid="s", payment=("stripe:pi:pi_7", "stripe:ch:ch_7")))
    for handle in ("stripe:pi:pi_7", "stripe:ch:ch_7"):  # the record's home, and a pointer
        found = ledger.memory.recall((handle,))
        assert found is not None
        assert (found.external_id, found.amount, found.currency) == ("in_7", 4990, "EUR")
    assert ledger.memory.recall(("stripe:pi:pi_other",)) is None


def test_a_duplicate_still_leaves_its_memory(ledger: Ledger) -> None:
    first = sale("cs_1", sid="rcs_1")
    record(ledger, first)
    ledger.redis.delete(*_buckets(ledger))  # as if recorded before memory existed
    assert isinstance(record(ledger, first), intake.Duplicate)
    assert ledger.memory.recall((SUB,)) is not None


def test_long_ids_span_several_fields_and_come_back_whole(ledger: Ledger) -> None:
    long_session = "rcs_" + "é" * 150  # multi-byte characters across chunk boundaries
    record(ledger, sale("cs_" + "x" * 200, sid=long_session, click_id="c" * 90))
    found = ledger.memory.recall((SUB,))
    assert found is not None
    assert (found.external_id, found.session_id) == ("cs_" + "x" * 200, long_session)


@pytest.mark.parametrize("length", [48, 49, 50, 112, 113])
def test_records_that_fill_their_chunks_to_the_brim(ledger: Ledger, length: int) -> None:
    # The text is the id and 11 more ("\x1f4990\x1fEUR\x1fs"): 59, 60, 61 (the first chunk
    # full), 123, 124 (the first two full) bytes.
    external_id = "cs_" + "z" * (length - 3)
    record(ledger, sale(external_id, sid="s"))
    found = ledger.memory.recall((SUB,))
    assert found is not None and (found.external_id, found.session_id) == (external_id, "s")


def test_a_shorter_record_of_the_same_sale_leaves_no_stale_chunk(ledger: Ledger) -> None:
    ledger.memory.remember(sale("cs_same", sid="s" * 200))
    ledger.memory.remember(sale("cs_same", sid="short"))
    found = ledger.memory.recall((SUB,))
    assert found is not None and found.session_id == "short"


def test_buckets_keep_the_compact_encoding(ledger: Ledger) -> None:
    for n in range(200):
        record(ledger, sale(f"cs_test_{n:060d}", sid=f"rcs_{n}", customer=(f"stripe:cus:c{n}",)))
    buckets = _buckets(ledger)
    assert buckets
    for key in buckets:
        assert ledger.redis.object("encoding", key) in (b"ziplist", b"listpack")


def test_entries_older_than_the_memory_are_gone_and_trimmed(ledger: Ledger) -> None:
    record(ledger, sale("cs_old", sid="rcs_old", customer=(CUS,)))
    _age_every_entry(ledger, days=401)
    record(ledger, sale("cs_new", sid="rcs_new", customer=("stripe:cus:fresh",)))
    assert ledger.memory.recall((CUS,)) is None
    longer = Memory(ledger.redis, days=500)  # a longer memory still sees it (and refreshes it)
    assert longer.recall((CUS,)) is not None
    _age_every_entry(ledger, days=401, only=(b"cs_old",))
    deleted = sum(ledger.memory.trim(memory.BUCKETS // 8) for _ in range(8))
    assert deleted == 2  # the old record and its customer handle; the new ones stay
    assert ledger.memory.recall(("stripe:cus:fresh",)) is not None


def test_recall_refreshes_what_it_uses(ledger: Ledger) -> None:
    record(ledger, sale("cs_1", sid="rcs_1", customer=(CUS,)))
    _age_every_entry(ledger, days=399)
    assert ledger.memory.recall((CUS,)) is not None  # stamped today again
    _age_every_entry(ledger, days=2)  # 2 days older than today: long inside 400
    assert ledger.memory.recall((CUS,)) is not None


def test_a_paypal_signup_is_remembered_without_a_delivery(ledger: Ledger) -> None:
    signup = Conversion(
        "I-SUB1",
        "TRIAL",
        0,
        "USD",
        session_id="rcs_pp",
        handles=Handles(("paypal:sub:I-SUB1", "paypal:payer:P1"), ()),
    )
    ledger.memory.remember(signup)
    assert ledger.get("I-SUB1") is None
    found = ledger.memory.recall(("paypal:sub:I-SUB1",))
    assert found is not None and found.session_id == "rcs_pp"


def _buckets(ledger: Ledger) -> list[bytes]:
    return list(ledger.redis.scan_iter(match=memory.PREFIX + "*", count=1000))


def _age_every_entry(ledger: Ledger, days: int, only: tuple[bytes, ...] = ()) -> None:
    """Stamp every remembered record `days` before today by Redis's clock (with `only`, the
    records whose text starts with one of those): the first chunk of each holds the stamp."""
    today = int(ledger.redis.time()[0]) // 86400
    stamp = (today - days).to_bytes(2, "big")
    for key in _buckets(ledger):
        for field, value in ledger.redis.hgetall(key).items():
            first_chunk = len(field) == 7 and field.endswith(b"\0")
            if first_chunk and (not only or value[2:].startswith(only)):
                ledger.redis.hset(key, field, stamp + value[2:])


def test_trim_takes_an_old_record_whole_and_leaves_no_bucket(ledger: Ledger) -> None:
    long_sale = sale("cs_long", sid="rcs_" + "s" * 150, payment=("stripe:pi:p", "stripe:ch:c"))
    # Three chunks where its first payment handle (the intent) would point from, and a field
    # each for the charge and the two customer handles.
    record(ledger, long_sale)
    _age_every_entry(ledger, days=401)
    deleted = sum(ledger.memory.trim(memory.BUCKETS // 4) for _ in range(4))
    assert deleted == 3 + 3
    assert _buckets(ledger) == []  # an emptied hash is gone from Redis


def test_a_page_recorded_at_once_attributes_a_renewal_from_the_checkout_before_it(
    ledger: Ledger,
) -> None:
    page = [(sale("cs_1", sid="rcs_1"), "evt_1"), (sale("in_2", customer=(SUB,)), "evt_2")]
    results = intake.accept_conversions(
        ledger, page, provider="stripe", received_at=time.time(), counter="catchup", counts={}
    )
    assert [type(r) for r in results] == [intake.Accepted, intake.Accepted]
    assert payload(ledger, "in_2")["metadata"] == {"attributedFrom": "cs_1"}


def test_a_resent_older_sale_never_takes_the_customer_back(ledger: Ledger) -> None:
    older, newer = sale("cs_old", sid="rcs_old"), sale("cs_new", sid="rcs_new")
    record(ledger, older)
    record(ledger, newer)
    assert isinstance(record(ledger, older), intake.Duplicate)  # a resend, or catch-up
    assert ledger.memory.attribute(sale("in_3", customer=(SUB,))).session_id == "rcs_new"


def test_a_pointer_to_a_forgotten_record_does_not_hide_the_handles_own(ledger: Ledger) -> None:
    # pi_1 is the home of in_1's record, and a later conversion names pi_1 as a second handle.
    record(ledger, sale("in_1", sid="s1", customer=(), payment=("stripe:pi:pi_1",)))
    record(ledger, sale("cs_2", sid="s2", customer=(), payment=("stripe:in:x", "stripe:pi:pi_1")))
    _age_every_entry(ledger, days=401, only=(b"cs_2",))  # cs_2's record is gone
    found = ledger.memory.recall(("stripe:pi:pi_1",))
    assert found is not None and found.external_id == "in_1"


def test_a_record_naming_no_affiliate_passes_to_the_next_handle(ledger: Ledger) -> None:
    record(ledger, sale("cs_1", sid="rcs_1", customer=(CUS,)))
    # A record without ids where the subscription's pointer leads (as a digest collision
    # or a hand edit would leave it): the customer's is used instead.
    record(ledger, sale("cs_mail", customer=(), payment=("stripe:pi:mail",)))
    bucket, field = memory._place(memory._digest("handle", SUB))
    ledger.redis.hset(bucket, field, memory._digest("handle", "stripe:pi:mail"))
    found = ledger.memory.attribute(sale("in_3", customer=(SUB, CUS)))
    assert (found.session_id, found.attributed_from) == ("rcs_1", "cs_1")


def test_a_dry_run_reads_memory_without_refreshing_it(ledger: Ledger) -> None:
    record(ledger, sale("cs_1", sid="rcs_1", customer=(CUS,)))
    _age_every_entry(ledger, days=399)
    before = {k: ledger.redis.hgetall(k) for k in _buckets(ledger)}
    assert ledger.memory.attribute(sale("x", customer=(CUS,)), refresh=False).session_id
    assert {k: ledger.redis.hgetall(k) for k in _buckets(ledger)} == before


def test_a_conversion_is_found_by_a_few_handles_not_by_as_many_as_it_lists(
    ledger: Ledger,
) -> None:
    many = tuple(f"stripe:ch:ch_{n}" for n in range(50))
    record(ledger, sale("in_many", sid="s", payment=many))
    fields = sum(ledger.redis.hlen(k) for k in _buckets(ledger))
    assert fields <= 2 + 3 + 2  # record and its terminator-free chunk, 3 more payments, 2 customers
    assert ledger.memory.recall(("stripe:ch:ch_3",)) is not None
    assert ledger.memory.recall(("stripe:ch:ch_4",)) is None

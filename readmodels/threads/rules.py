"""Thread read models, the rules: each one in Python (the fold and the tests) and in SQL (the
live ``apply``, the rebuild and the API's queries), side by side.

- ``from_participant`` / ``FROM_PARTICIPANT``  a message belongs to the thread;
- ``visible`` / ``VISIBLE``                    it counts in one side's preview and history;
- ``unread`` / ``UNREAD``                      it is unread for one participant;
- ``is_paid`` / ``PAID``                       the thread is paid (a live ``payment_received``);
- ``further`` / ``READS_FORWARD``              which of two read markers is kept.

An SQL form is a template for one ``thread_messages`` row ``{m}`` of a thread whose participants
are ``{cid}`` and ``{pid}`` (``str.format``; unused names are ignored), with ``{role}`` the
viewing side, ``{user}`` the viewer and ``{up_to}`` the viewer's ``read_up_to`` (NULL: none).
A stored row with ``created_at`` NULL is a deleted stub (a delete seen before its create), so
``NOT deleted`` stands for the Python forms' "created, not deleted".
tests/integration/test_threads_rules.py holds each pair equal on random messages.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from readside.readmodels.threads.fold import Message, Started, ThreadState

__all__ = [
    "FROM_PARTICIPANT", "PAID", "READS_FORWARD", "UNREAD", "VISIBLE",
    "from_participant", "further", "is_paid", "sql", "unread", "visible",
]


def sql(rule: str, **names: str) -> str:
    """``rule`` (an SQL form below) for the given row alias and expressions."""
    return rule.format(**names)


def from_participant(m: Message, s: Started) -> bool:
    """``m`` belongs to the thread: a system message, or a user message whose ``sender_id`` is the
    participant of its ``sender_type`` (the client's id for ``client``, the provider's for
    ``provider``). Any other message — a stranger's, or one whose type names the other side — is
    kept but counts as never sent (docs/decisions.md): it can only be judged once ``thread.started``
    is known, so the same in every arrival order."""
    if m.sender_type == "system":
        return True
    return m.sender_id is not None and m.sender_id == {"client": s.client_id, "provider": s.provider_id}.get(m.sender_type or "")


# ``from_participant``: a system message, or a user message from the participant its sender_type names.
FROM_PARTICIPANT = (
    "({m}.sender_type = 'system' OR {m}.sender_id = CASE {m}.sender_type WHEN 'client' THEN {cid} "
    "WHEN 'provider' THEN {pid} END)"
)


def visible(m: Message | None, role: str, s: Started) -> bool:
    """``m`` counts in ``role``'s preview: created, not deleted, visible to that side, from a
    participant of thread ``s``."""
    return (
        m is not None and not m.deleted and m.created_at is not None and m.visible_to in ("both", role)
        and from_participant(m, s)
    )


# ``visible``: what the preview counts and the history endpoint lists for side ``{role}``.
VISIBLE = "NOT {m}.deleted AND {m}.visible_to IN ('both', {role}) AND " + FROM_PARTICIPANT


def unread(m: Message | None, role: str, user: str, marker: tuple[datetime, datetime] | None, s: Started) -> bool:
    """``m`` is unread for ``user`` (in ``role``) with read marker ``marker`` (strictly after it)."""
    return visible(m, role, s) and m.sender_id != user and (marker is None or m.created_at > marker[1])  # type: ignore[union-attr,operator]


# ``unread``: visible, not the viewer's own, created strictly after the viewer's ``read_up_to``.
UNREAD = (
    "NOT {m}.deleted AND {m}.created_at > coalesce({up_to}, '-infinity') AND {m}.visible_to IN ('both', {role}) "
    "AND {m}.sender_id IS DISTINCT FROM {user} AND " + FROM_PARTICIPANT
)


def is_paid(state: ThreadState) -> bool:
    """A ``payment.received``, or a live ``payment_received`` message of the thread (``started`` known)."""
    s = state.started
    assert s is not None
    return state.paid_by_payment or any(
        m.system_key == "payment_received" and not m.deleted and m.created_at is not None and from_participant(m, s)
        for m in state.messages.values()
    )


# ``is_paid``'s message part (the ``threads.paid_by_payment`` column is the other): a live
# ``payment_received`` message of the thread (the partial index ``thread_messages_paid``).
PAID = "{m}.system_key = 'payment_received' AND NOT {m}.deleted AND " + FROM_PARTICIPANT


def further(current: tuple[datetime, datetime] | None, candidate: tuple[datetime, datetime]) -> tuple[datetime, datetime]:
    """The read marker ``(read_at, read_up_to)`` that reaches further: the greatest ``read_up_to``
    (CONTRACT §1 "read markers only move forward"), ties broken by the later ``read_at``."""
    return candidate if current is None or (candidate[1], candidate[0]) > (current[1], current[0]) else current


# ``further`` as the ``thread_reads`` upsert's condition: the stored marker is replaced only by one
# that reaches further, whatever order the writes come in.
READS_FORWARD = (
    " WHERE (excluded.read_up_to, excluded.read_at) > (thread_reads.read_up_to, thread_reads.read_at)"
)

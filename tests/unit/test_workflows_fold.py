"""The workflow summary fold (CONTRACT §1 "Workflows", §2 `GET /v1/workflows`, §3 Workflows), as
tables of cases, plus Hypothesis properties: duplicates apply once, and any arrival order — a
version saved before its workflow's creation included — lists the same as time order.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from readside.load import Record, workflow_stream
from readside.readmodels.workflows.fold import WorkflowState, fold, fold_all, render
from tests.support import as_event, record, ts

# -- record builders (also used by the integration and e2e modules) ------------------------------

def created(wid: str, owner: str = "u-1", at: float = 0, name: str = "Onboarding", template: bool = False) -> Record:
    payload = {"workflow_id": wid, "owner_id": owner, "name": name, "is_template": template, "created_at": ts(at)}
    return record("workflow.created", payload)


def saved(wid: str, version: int, at: float, nodes: int = 3, edges: int | None = None) -> Record:
    edges = max(nodes - 1, 0) if edges is None else edges
    payload = {
        "workflow_id": wid,
        "version_number": version,
        "nodes": [{"id": f"n{i}", "type": "action", "config": {"retries": 1}} for i in range(nodes)],
        "edges": [{"id": f"e{i}", "source": "n0", "target": f"n{i + 1}"} for i in range(edges)],
        "saved_at": ts(at),
    }
    return record("workflow.version_saved", payload)


def deleted(wid: str, at: float) -> Record:
    return record("workflow.deleted", {"workflow_id": wid, "deleted_at": ts(at)})


def listed(records: list[Record]) -> dict[str, Any]:
    """What the lists show: every listed workflow's owner, template flag, sort time and item."""
    out = {}
    for wid, state in fold_all(as_event(r) for r in records).items():
        row = render(state)
        if row is not None and row.listed:
            out[wid] = (row.owner_id, row.is_template, row.updated_at, row.item)
    return out


def item(*records: Record) -> dict[str, Any] | None:
    got = listed(list(records))
    return next(iter(got.values()))[3] if got else None


# -- tables --------------------------------------------------------------------------------------

def test_created_without_versions():
    got = item(created("w", at=5, name="Invoice approval"))
    assert got == {"id": "w", "name": "Invoice approval", "latest_version": None, "node_count": 0, "edge_count": 0,
                   "is_template": False, "created_at": as_event(created("w", at=5)).payload.created_at,
                   "updated_at": as_event(created("w", at=5)).payload.created_at}


@pytest.mark.parametrize(
    ("records", "version", "nodes", "edges", "updated"),
    [
        pytest.param([saved("w", 1, 10, 4), saved("w", 2, 20, 12, 11)], 2, 12, 11, 20, id="latest-version-counts"),
        pytest.param([saved("w", 2, 20, 12, 11), saved("w", 1, 10, 4)], 2, 12, 11, 20, id="highest-number-wins-any-arrival"),
        pytest.param([saved("w", 3, 10, 5), saved("w", 2, 30, 7)], 3, 5, 4, 30, id="updated-at-is-latest-saved-at"),
        pytest.param([saved("w", 1, 10, 0, 0)], 1, 0, 0, 10, id="empty-graph"),
    ],
)
def test_versions(records, version, nodes, edges, updated):
    got = item(created("w", at=1), *records)
    assert (got["latest_version"], got["node_count"], got["edge_count"]) == (version, nodes, edges)
    assert got["updated_at"] == as_event(saved("w", 1, updated)).payload.saved_at


def test_a_version_before_created_is_kept_until_created_arrives():
    assert item(saved("w", 1, 10, 6)) is None
    got = item(saved("w", 1, 10, 6), created("w", at=1))
    assert (got["latest_version"], got["node_count"], got["edge_count"]) == (1, 6, 5)


@pytest.mark.parametrize(
    "records",
    [
        pytest.param([created("w"), saved("w", 1, 5), deleted("w", 9)], id="deleted-left-out"),
        pytest.param([created("w"), deleted("w", 9), saved("w", 2, 20)], id="events-after-deleted-ignored"),
        pytest.param([deleted("w", 9), created("w"), saved("w", 1, 5)], id="delete-first-is-sticky"),
    ],
)
def test_deleted_workflows_are_never_listed(records):
    assert listed(records) == {}


def test_events_after_deleted_leave_the_state_alone():
    state = fold_all(as_event(r) for r in [created("w"), deleted("w", 9)])["w"]
    assert fold(state, as_event(saved("w", 5, 20))) == state


@pytest.mark.parametrize(
    ("records", "name"),
    [
        pytest.param([created("w", at=1, name="first"), created("w", at=2, name="second")], "first", id="first-wins"),
        pytest.param([created("w", at=2, name="second"), created("w", at=1, name="first")], "first", id="earliest-wins-any-arrival"),
    ],
)
def test_a_second_created_is_ignored(records, name):
    assert item(*records)["name"] == name


def test_templates_and_owners():
    got = listed([created("a", owner="u-1", template=True), created("b", owner="u-2")])
    assert got["a"][:2] == ("u-1", True) and got["b"][:2] == ("u-2", False)
    assert got["a"][3]["is_template"] is True


def test_redelivered_event_is_idempotent():
    rec = saved("w", 1, 5)
    once = fold(WorkflowState("w"), as_event(rec))
    assert fold(once, as_event(rec)) == once


# -- properties ----------------------------------------------------------------------------------

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)

streams = st.builds(
    lambda seed, n: [r for r in workflow_stream(workflows=n, versions=(0, 6), users=4, seed=seed)],
    st.integers(0, 10_000),
    st.integers(1, 6),
)


@SETTINGS
@given(streams, st.data())
def test_duplicates_apply_once(stream, data):
    noisy = list(stream)
    for i in data.draw(st.lists(st.sampled_from(range(len(stream))), max_size=len(stream))):
        noisy.insert(data.draw(st.integers(i + 1, len(noisy))), stream[i])
    assert listed(noisy) == listed(stream)


@SETTINGS
@given(streams, st.randoms(use_true_random=False))
def test_any_arrival_order_lists_like_time_order(stream, rnd):
    shuffled = list(stream)
    rnd.shuffle(shuffled)
    assert listed(shuffled) == listed(stream)

"""Workflow summary read model, the cache scopes: what ``apply`` bumps and the API's ETags name.

- ``workflows:<owner_id>``  one owner's workflows: told to that viewer;
- ``templates``             every template: told to every viewer (anyone may list templates).

Each is also the key of the list's ``workflow_list_versions`` row.
"""

from __future__ import annotations

from readside.readmodels.base import EVERYONE, OWNER, ScopeKind

__all__ = ["SCOPES", "TEMPLATES_KEY", "owner_key"]

OWNER_LIST = ScopeKind("workflows", OWNER)
TEMPLATES = ScopeKind("templates", EVERYONE, keyed=False, bare=True)
SCOPES = (OWNER_LIST, TEMPLATES)
TEMPLATES_KEY = TEMPLATES.scope()


def owner_key(owner_id: str) -> str:
    return OWNER_LIST.scope(owner_id)

"""Consent, as Segment's Consent Management enforces it (docs/mappings.md, "Consent").

A destination's table in the mapping file names the consent categories it needs
(`consent = ["analytics"]`). A call is judged once, when it arrives, before its
`integrations` object:

* no `context.consent` object: not filtered (Segment: "events without the consent
  object continue to flow to destinations without consent enforcement");
* otherwise the destination gets the call only if `context.consent.categoryPreferences`
  sets every category it names to true: an empty object, a missing category or a false
  one keeps the call from it (Segment forwards to a destination "only if the user has
  opted-in to all" its categories).

A held, parked or aggregated call keeps its verdict. What a destination may not receive
it never receives later either: the traits (and, for a user, the group) a call brings
are remembered for everyone, so each record also keeps, per destination denied a call,
what that destination saw before it (`Withheld`): the previous value of each trait the
call changed (or that the trait was absent), the user's previous group. A destination
decides on its own view of the record (`view_traits`); a later call it may receive
shows it the values that call brings. Kept under `WITHHELD_MAX_BYTES` per record: past
it a destination's changed traits are hidden rather than shown as they were, and past
that all its traits are hidden but those a call it received brought.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

WITHHELD_MAX_BYTES = 16 * 1024  # one record's withheld views, every destination, as JSON

# What one destination's withheld view holds (compact keys: it is stored in the record).
TRAITS, GROUP, ALL, SHOWN = "t", "g", "all", "ok"

Withheld = Mapping[str, Mapping[str, Any]]


class Consented(Protocol):
    @property
    def key(self) -> str: ...

    @property
    def consent(self) -> frozenset[str]: ...


@dataclass(frozen=True)
class Rule:
    """A destination's consent categories, enabled or not (`Destination` has them too)."""

    key: str
    consent: frozenset[str] = frozenset()


def preferences(context: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The call's categoryPreferences; None when it has no consent object (not filtered)."""
    consent = context.get("consent")
    if consent is None:
        return None
    prefs = consent.get("categoryPreferences") if isinstance(consent, Mapping) else None
    return prefs if isinstance(prefs, Mapping) else {}


def allows(context: Mapping[str, Any], needs: Iterable[str]) -> bool:
    """Whether a call with this `context` may reach a destination that needs `needs`."""
    needs = tuple(needs)
    if not needs:
        return True
    prefs = preferences(context)
    return prefs is None or all(prefs.get(category) is True for category in needs)


def denied(context: Mapping[str, Any], destinations: Iterable[Consented]) -> frozenset[str]:
    """The destinations a call with this `context` may not reach."""
    return frozenset(d.key for d in destinations if not allows(context, d.consent))


def watched(destinations: Iterable[Consented]) -> frozenset[str]:
    """The destinations that name categories: the only ones a call can be denied to."""
    return frozenset(d.key for d in destinations if d.consent)


def after_call(
    withheld: Withheld,
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    denied_to: frozenset[str],
    watching: frozenset[str],
    group: tuple[str | None, str | None] | None = None,
    brought: Iterable[str] = (),
) -> dict[str, dict[str, Any]]:
    """`withheld` after a call changed the traits `before` into `after` (and, for a user,
    the group `group` = (before, after)): a destination denied the call keeps seeing
    what it saw; one that may receive it now sees what the call changed or `brought`."""
    changed = [k for k in {*before, *after} if (k in before) != (k in after) or before.get(k) != after.get(k)]
    shown_now = [*changed, *(k for k in brought if k in after and k not in changed)]
    group_moved = group is not None and group[0] != group[1]
    out = {d: dict(view) for d, view in withheld.items() if d in watching}
    for dest in watching:
        view = dict(out.get(dest) or {})
        traits = dict(view.get(TRAITS) or {})
        if dest in denied_to:
            for k in changed:
                if k not in traits and not view.get(ALL):
                    traits[k] = [before[k]] if k in before else []
            view[SHOWN] = [k for k in view.get(SHOWN, ()) if k not in changed]
            if group_moved and GROUP not in view and group is not None:
                view[GROUP] = [group[0]] if group[0] is not None else []
        else:
            for k in shown_now:
                traits.pop(k, None)
            if view.get(ALL):
                view[SHOWN] = list(dict.fromkeys([*view.get(SHOWN, ()), *(k for k in shown_now if k in after)]))
            if group_moved:
                view.pop(GROUP, None)
        view[TRAITS] = traits
        out[dest] = _tidy(view)
    out = {d: v for d, v in out.items() if v}
    return _bounded(out, after, denied_to)


def view_traits(traits: Mapping[str, Any], view: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """`traits` as the destination whose withheld view is `view` may see them."""
    if not view:
        return traits
    if view.get(ALL):
        return {k: traits[k] for k in view.get(SHOWN, ()) if k in traits}
    seen = dict(traits)
    for k, old in (view.get(TRAITS) or {}).items():
        if old:
            seen[k] = old[0]
        else:
            seen.pop(k, None)
    return seen


def hidden(view: Mapping[str, Any] | None, key: str) -> bool:
    """Whether `key` is withheld from the destination (shown as before, or not at all)."""
    if not view:
        return False
    if view.get(ALL):
        return key not in view.get(SHOWN, ())
    return key in (view.get(TRAITS) or {})


def group_seen(view: Mapping[str, Any] | None, group_id: str | None) -> str | None:
    """The user's group as the destination may see it."""
    if not view or GROUP not in view:
        return group_id
    previous = view[GROUP]
    return previous[0] if previous else None


def merge(
    user: Withheld, anonymous: Withheld, user_traits: Mapping[str, Any], *, user_has_group: bool = False
) -> dict[str, dict[str, Any]]:
    """The withheld views of a user who takes in an anonymous profile: the user's win; the
    visitor's add what the user's traits (and group) do not override; all hidden stays
    all hidden."""
    out: dict[str, dict[str, Any]] = {}
    for dest in {*user, *anonymous}:
        mine, theirs = dict(user.get(dest) or {}), dict(anonymous.get(dest) or {})
        if mine.get(ALL) or theirs.get(ALL):
            withheld_keys = {*(mine.get(TRAITS) or {}), *(theirs.get(TRAITS) or {})}
            shown = [
                k
                for k in mine.get(SHOWN, user_traits)
                if k in theirs.get(SHOWN, user_traits) and k not in withheld_keys
            ]
            out[dest] = {ALL: True, SHOWN: shown}
            continue
        traits = {k: v for k, v in (theirs.get(TRAITS) or {}).items() if k not in user_traits}
        traits.update(mine.get(TRAITS) or {})
        view: dict[str, Any] = {TRAITS: traits}
        if GROUP in mine:
            view[GROUP] = mine[GROUP]
        elif GROUP in theirs and not user_has_group:
            view[GROUP] = theirs[GROUP]
        out[dest] = _tidy(view)
    return {d: v for d, v in out.items() if v}


def size(withheld: Withheld) -> int:
    return len(json.dumps(withheld, separators=(",", ":"), default=str))


def _tidy(view: dict[str, Any]) -> dict[str, Any]:
    if not view.get(TRAITS):
        view.pop(TRAITS, None)
    if not view.get(ALL):
        view.pop(ALL, None)
        view.pop(SHOWN, None)
    return view


def _bounded(withheld: dict[str, dict[str, Any]], traits: Mapping[str, Any], denied_to: frozenset[str]) -> dict:
    """Under WITHHELD_MAX_BYTES, giving up detail, never privacy: first the previous
    values of the destinations denied this call (their traits hidden instead), then all
    their traits hidden, then every destination's."""
    if size(withheld) <= WITHHELD_MAX_BYTES:
        return withheld
    for dest in denied_to & set(withheld):
        view = withheld[dest]
        view[TRAITS] = {k: [] for k in view.get(TRAITS) or {}}
        withheld[dest] = _tidy(view)
    for dests in (denied_to & set(withheld), set(withheld)):
        if size(withheld) <= WITHHELD_MAX_BYTES:
            break
        for dest in dests:
            group = withheld[dest].get(GROUP)
            withheld[dest] = {ALL: True, **({GROUP: group} if group is not None else {})}
    return withheld

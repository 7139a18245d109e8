"""The CustomerSuccessBox plugin: its settings (read through EnvReader), its credentials,
and what it remembers of users and groups (memory.py), including across a merge."""

from __future__ import annotations

import pytest

from streams.core.reducers import apply_to_group, apply_to_user, merge_users
from streams.core.state import GroupState, UserState
from streams.destinations.customersuccessbox import PLUGIN, memory
from streams.destinations.customersuccessbox.mock import presented_key
from streams.destinations.customersuccessbox.settings import CustomerSuccessBoxSettings
from streams.envreader import EnvReader, SettingsError
from tests.factories import msg

KEY = "csb-key-that-must-not-leak"
FULL = {"CSB_API_KEY": KEY, "CSB_BASE_URL": "https://acme.customersuccessbox.com"}
NOW = "2026-11-30T00:00:00+00:00"
SLOT = memory.KEY


def read(env: dict[str, str]) -> CustomerSuccessBoxSettings:
    return PLUGIN.read_settings(EnvReader(env))


# ---------------------------------------------------------------- settings


def test_read_settings_is_from_env_and_memory_is_registered():
    assert PLUGIN.read_settings == CustomerSuccessBoxSettings.from_env
    assert PLUGIN.memory is memory.MEMORY and memory.MEMORY.key == PLUGIN.key == SLOT


def test_enabled_with_api_key_and_base_url():
    settings = read(FULL)
    assert settings.enabled
    assert (settings.api_key.reveal(), settings.base_url, settings.rate_limit) == (KEY, FULL["CSB_BASE_URL"], 0.0)


@pytest.mark.parametrize("missing", sorted(FULL))
def test_disabled_without_any_one_required_variable(missing):
    env = {name: value for name, value in FULL.items() if name != missing}
    assert not read(env).enabled
    assert not read({**env, missing: " "}).enabled  # blank counts as unset


def test_disabled_with_nothing_set_and_no_default_host():
    settings = read({})
    assert not settings.enabled and settings.base_url == ""


@pytest.mark.parametrize(
    "url", ["acme.customersuccessbox.com", "ftp://acme.customersuccessbox.com", "https://k:x@acme"]
)
def test_a_bad_base_url_raises_naming_the_variable(url):
    with pytest.raises(SettingsError, match="CSB_BASE_URL"):
        read({**FULL, "CSB_BASE_URL": url})


def test_a_bad_rate_limit_raises_naming_the_variable():
    with pytest.raises(SettingsError, match="CS_RELAY_CSB_RATE_LIMIT"):
        read({**FULL, "CS_RELAY_CSB_RATE_LIMIT": "lots"})


def test_secrets_are_the_api_key_and_only_when_set():
    assert read(FULL).secrets() == [KEY]
    assert read({"CSB_BASE_URL": FULL["CSB_BASE_URL"]}).secrets() == []
    assert [v.name for v in PLUGIN.variables if v.secret] == ["CSB_API_KEY"]


def test_repr_and_str_hide_the_api_key():
    settings = read(FULL)
    assert KEY not in repr(settings) and KEY not in str(settings)
    assert FULL["CSB_BASE_URL"] in repr(settings)


def test_credentials_are_a_bearer_header_that_the_mock_accepts():
    settings = read(FULL)
    attached = PLUGIN.credentials(settings)
    assert dict(attached.headers) == {"Authorization": f"Bearer {KEY}"} and attached.sign is None
    assert attached.headers_for(b'{"accountId":"A"}') == {"Authorization": f"Bearer {KEY}"}
    assert dict(attached.query) == {}
    assert KEY not in repr(attached)
    assert presented_key(attached.headers["Authorization"]) == KEY


# ---------------------------------------------------------------- memory: users


def learned(*messages, user: UserState | None = None) -> dict:
    for m in messages:
        user = apply_to_user(user, m, NOW, memories=[memory.MEMORY])
    assert user is not None, "learned() needs at least one message"
    return dict(user.slot(SLOT))


def test_identify_teaches_the_users_account_and_csb_user_id_from_traits():
    assert learned(msg("identify", traits={"account_id": "A1", "user_id": "john@x.example", "plan": "pro"})) == {
        "account_id": "A1",
        "user_id": "john@x.example",
    }


def test_numeric_ids_are_kept_as_text():
    assert learned(msg("identify", traits={"account_id": 12345678})) == {"account_id": "12345678"}


def test_group_teaches_the_users_account_but_not_a_user_id():
    assert learned(msg("group", groupId="acme", traits={"account_id": "A1", "user_id": "x"})) == {"account_id": "A1"}


@pytest.mark.parametrize(
    "type_, extra", [("track", {"event": "E"}), ("page", {"name": "P"}), ("screen", {"name": "S"})]
)
def test_track_page_and_screen_teach_ids_from_properties(type_, extra):
    m = msg(type_, properties={"account_id": "A2", "user_id": "u-csb"}, **extra)
    assert learned(m) == {"account_id": "A2", "user_id": "u-csb"}


def test_alias_and_calls_without_ids_teach_nothing_and_leave_no_slot():
    user = apply_to_user(None, msg("track", event="E", properties={"x": 1}), NOW, memories=[memory.MEMORY])
    user = apply_to_user(
        user, msg("alias", previousId="anon", traits={"account_id": "A"}), NOW, memories=[memory.MEMORY]
    )
    assert SLOT not in user.slots and memory.user_account(user) is None and memory.user_id(user) is None


def test_the_latest_id_wins_and_blank_or_missing_ids_do_not_erase_it():
    slot = learned(
        msg("identify", traits={"account_id": "A1", "user_id": "first"}),
        msg("track", event="E", properties={"account_id": "A2"}),
        msg("identify", traits={"account_id": "", "user_id": None}),
        msg("page", properties={"account_id": True}),
    )
    assert slot == {"account_id": "A2", "user_id": "first"}


def test_the_accessors_read_the_slot():
    user = UserState("u1", slots={SLOT: {"account_id": "A", "user_id": "csb-u"}, "other": {"account_id": "no"}})
    assert (memory.user_account(user), memory.user_id(user)) == ("A", "csb-u")
    assert memory.user_account(UserState("u2", slots={"other": {"account_id": "no"}})) is None


# ---------------------------------------------------------------- memory: groups


def test_a_group_call_teaches_the_groups_account():
    group = apply_to_group(
        None, msg("group", groupId="acme", traits={"account_id": "A1", "name": "Acme"}), NOW, memories=[memory.MEMORY]
    )
    assert dict(group.slot(SLOT)) == {"account_id": "A1"} and memory.group_account(group) == "A1"


def test_a_group_without_account_id_leaves_the_slot_and_keeps_an_earlier_account():
    bare = apply_to_group(None, msg("group", groupId="acme", traits={"name": "Acme"}), NOW, memories=[memory.MEMORY])
    assert SLOT not in bare.slots and memory.group_account(bare) is None
    known = GroupState("acme", slots={SLOT: {"account_id": "A1"}})
    later = apply_to_group(known, msg("group", groupId="acme", traits={"plan": "pro"}), NOW, memories=[memory.MEMORY])
    assert memory.group_account(later) == "A1"


def test_only_group_calls_change_a_groups_slot():
    assert memory.remember_group({"account_id": "A1"}, msg("identify", traits={"account_id": "B"})) == {
        "account_id": "A1"
    }


# ---------------------------------------------------------------- memory: merge


def test_merge_the_users_ids_win_and_the_anonymous_profile_fills_gaps():
    user = UserState("u1", user_id="u1", slots={SLOT: {"account_id": "NEW"}})
    anonymous = UserState("anon-1", slots={SLOT: {"account_id": "OLD", "user_id": "csb-anon"}})
    merged = merge_users(user, anonymous, "anon-1")
    assert dict(merged.slot(SLOT)) == {"account_id": "NEW", "user_id": "csb-anon"}
    assert (memory.user_account(merged), memory.user_id(merged)) == ("NEW", "csb-anon")


def test_merge_carries_the_anonymous_slot_when_the_user_has_none():
    anonymous = UserState("anon-1", slots={SLOT: {"account_id": "A9"}})
    merged = merge_users(UserState("u1", user_id="u1"), anonymous, "anon-1")
    assert memory.user_account(merged) == "A9"


def test_merge_with_no_anonymous_record_keeps_the_users_slot():
    user = UserState("u1", user_id="u1", slots={SLOT: {"account_id": "A1"}})
    assert dict(merge_users(user, None, "anon-1").slot(SLOT)) == {"account_id": "A1"}

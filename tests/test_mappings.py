"""The mapping file (CS_RELAY_MAPPINGS, streams/core/mappings.py): every rule of the
transform, every validation error (each naming file, line and key), the destinations'
own options, and how settings and wiring bind them."""

from __future__ import annotations

import textwrap
from dataclasses import replace

import pytest

from streams.core.decision import Send, Skip
from streams.core.mappingfile import MappingError, load, load_file
from streams.core.mappings import (
    Controls,
    DestinationControls,
    bind,
    event_name,
    rename_traits,
    transform,
)
from streams.core.state import GroupState, UserState
from streams.destinations import REGISTRY, plugin
from streams.destinations.clientsuccess import mapping as cs
from streams.destinations.clientsuccess.settings import ClientSuccessSettings
from streams.destinations.customersuccessbox import mapping as csb
from streams.destinations.webhook import mapping as wh
from streams.envreader import EnvReader, SettingsError
from streams.settings import Settings
from tests.factories import msg

OPTIONS = {p.key: p.options for p in REGISTRY}
ACME = GroupState("acme", name="Acme", traits={"name": "Acme", "plan_name": "pro"})
USER = UserState("u1", user_id="u1", group_id="acme", groups=("acme",))


def groups(group_id):
    return ACME if group_id == "acme" else None


def controls(**fields) -> DestinationControls:
    return DestinationControls(**fields)


def parse_toml(text: str, path: str = "map.toml") -> Controls:
    return load(textwrap.dedent(text), path, OPTIONS)


def problems(text: str, path: str = "map.toml") -> list[str]:
    with pytest.raises(MappingError) as caught:
        parse_toml(text, path)
    return caught.value.problems


# ------------------------------------------------------------------------ event names


def test_event_names_that_allow_deny_and_rename_match():
    assert event_name(msg("track", event="Order Completed")) == "Order Completed"
    assert event_name(msg("page", name="Pricing")) == "Viewed Pricing Page"
    assert event_name(msg("page")) == "Loaded a Page"
    assert event_name(msg("screen", name="Home")) == "Viewed Home Screen"
    assert event_name(msg("screen")) == "Loaded a Screen"
    assert event_name(msg("identify", traits={})) is None


def test_a_page_is_matched_by_the_name_clientsuccess_gives_it():
    for page in (msg("page", name="Pricing"), msg("page")):
        assert event_name(page) == cs.event_name(page)


# ------------------------------------------------------------------------ transform


def test_defaults_change_nothing_and_bind_returns_decide_itself():
    for m in (msg("track", event="A"), msg("page", name="P"), msg("screen", name="S"), msg("identify")):
        assert transform(controls(), m) is m

    def decide(m, user, groups):
        return "decided"

    assert bind(DestinationControls(), decide) is decide


def test_allow_takes_names_and_globs_and_skips_the_rest():
    rules = controls(allow=("Order *", "Report Exported"))
    assert transform(rules, msg("track", event="Order Completed")).event == "Order Completed"
    assert transform(rules, msg("track", event="Report Exported")).event == "Report Exported"
    refused = transform(rules, msg("track", event="Signed Up"))
    assert refused == Skip("'Signed Up' matches no allow pattern of the mapping file")


def test_globs_are_case_sensitive_and_take_question_marks_and_sets():
    rules = controls(allow=("Step ?", "Plan [AB]", "Tier [!0-9]"))
    assert not isinstance(transform(rules, msg("track", event="Step 1")), Skip)
    assert isinstance(transform(rules, msg("track", event="Step 10")), Skip)
    assert not isinstance(transform(rules, msg("track", event="Plan B")), Skip)
    assert isinstance(transform(rules, msg("track", event="plan B")), Skip)
    assert not isinstance(transform(rules, msg("track", event="Tier x")), Skip)
    assert isinstance(transform(rules, msg("track", event="Tier 1")), Skip)


def test_deny_applies_after_allow():
    rules = controls(allow=("Order *",), deny=("Order Debug*",))
    assert transform(rules, msg("track", event="Order Debug 1")) == Skip(
        "'Order Debug 1' matches the deny pattern 'Order Debug*' of the mapping file"
    )
    assert transform(rules, msg("track", event="Order Placed")).event == "Order Placed"
    assert isinstance(transform(controls(deny=("Debug *",)), msg("track", event="Debug x")), Skip)


def test_rename_renames_exact_names_after_allow_and_deny_matched_the_original():
    rules = controls(allow=("Order Completed",), rename={"Order Completed": "Purchase"})
    renamed = transform(rules, msg("track", event="Order Completed", properties={"value": 3}))
    assert (renamed.type, renamed.event, renamed.raw["event"], renamed.properties) == (
        "track",
        "Purchase",
        "Purchase",
        {"value": 3},
    )
    assert transform(rules, msg("track", event="Order Completed ")).__class__ is Skip  # exact, not a glob
    assert transform(controls(rename={"Order *": "X"}), msg("track", event="Order A")).event == "Order A"


def test_the_original_message_is_never_modified():
    original = msg("page", name="Pricing", properties={"path": "/p"})
    before = dict(original.raw)
    transform(controls(pages="single", rename={"Page Viewed": "Visit"}), original)
    assert dict(original.raw) == before and original.type == "page"


def test_pages_per_page_keeps_the_page_and_matches_its_event_name():
    rules = controls(deny=("Viewed Pricing Page",))
    assert transform(rules, msg("page", name="Pricing")) == Skip(
        "'Viewed Pricing Page' matches the deny pattern 'Viewed Pricing Page' of the mapping file"
    )
    kept = transform(rules, msg("page", name="Docs"))
    assert (kept.type, kept.name) == ("page", "Docs")


def test_pages_single_makes_every_page_the_track_page_viewed_with_its_name_as_a_property():
    page = msg("page", name="Pricing", category="Docs", properties={"path": "/pricing"}, context={"ip": "1"})
    single = transform(controls(pages="single"), page)
    assert single.type == "track" and single.event == "Page Viewed"
    assert single.raw == {
        **{k: v for k, v in page.raw.items() if k not in ("name", "category")},
        "type": "track",
        "event": "Page Viewed",
        "properties": {"path": "/pricing", "name": "Pricing", "category": "Docs"},
    }
    own_name = transform(controls(pages="single"), msg("page", name="Pricing", properties={"name": "Mine"}))
    assert own_name.properties["name"] == "Mine"
    unnamed = transform(controls(pages="single"), msg("page"))
    assert unnamed.event == "Page Viewed" and "name" not in unnamed.properties


def test_pages_single_is_matched_and_renamed_as_page_viewed():
    assert isinstance(transform(controls(pages="single", allow=("Order *",)), msg("page", name="P")), Skip)
    assert transform(controls(pages="single", allow=("Page Viewed",)), msg("page", name="P")).event == "Page Viewed"
    assert transform(controls(pages="single", rename={"Page Viewed": "Visit"}), msg("page")).event == "Visit"


def test_pages_off_skips_pages():
    assert transform(controls(pages="off"), msg("page", name="P")) == Skip(
        'page calls are off in the mapping file: pages = "off"'
    )


def test_a_renamed_page_is_sent_as_a_track_of_the_new_name():
    renamed = transform(controls(rename={"Viewed Pricing Page": "Pricing Seen"}), msg("page", name="Pricing"))
    assert (renamed.type, renamed.event, renamed.properties["name"]) == ("track", "Pricing Seen", "Pricing")


def test_screens_absent_leave_screens_to_the_destination_untouched_by_the_lists():
    screen = msg("screen", name="Home")
    assert transform(controls(allow=("Order *",), rename={"Viewed Home Screen": "X"}), screen) is screen


def test_screens_off_as_page_and_as_event():
    screen = msg("screen", name="Home", properties={"tab": 1})
    assert transform(controls(screens="off"), screen) == Skip(
        'screen calls are off in the mapping file: screens = "off"'
    )
    as_page = transform(controls(screens="as_page"), screen)
    assert (as_page.type, as_page.raw["type"], as_page.name) == ("page", "page", "Home")
    assert transform(controls(screens="as_page", pages="single"), screen).event == "Page Viewed"
    assert transform(controls(screens="as_page", pages="off"), screen).__class__ is Skip
    as_event = transform(controls(screens="as_event"), screen)
    assert (as_event.type, as_event.event, as_event.properties) == (
        "track",
        "Viewed Home Screen",
        {"tab": 1, "name": "Home"},
    )
    assert transform(controls(screens="as_event"), msg("screen")).event == "Loaded a Screen"
    assert isinstance(transform(controls(screens="as_event", deny=("Viewed * Screen",)), screen), Skip)
    assert transform(controls(screens="as_event", rename={"Viewed Home Screen": "Home"}), screen).event == "Home"


def test_calls_without_an_event_name_pass_every_list():
    rules = controls(allow=("Nothing",), deny=("*",))
    for m in (msg("identify", traits={"a": 1}), msg("group", groupId="g"), msg("alias", previousId="a")):
        assert transform(rules, m) is m


def test_bind_decides_on_the_transformed_message_and_returns_the_skip():
    seen = []

    def decide(m, user, groups):
        seen.append(m)
        return Send(None)

    controlled = bind(controls(rename={"A": "B"}, deny=("Z",)), decide)
    assert isinstance(controlled(msg("track", event="A"), USER, groups), Send)
    assert seen[-1].event == "B"
    refused = Skip("'Z' matches the deny pattern 'Z' of the mapping file")
    assert controlled(msg("track", event="Z"), USER, groups) == refused
    assert len(seen) == 1


def test_rename_traits():
    assert rename_traits({"plan_name": "pro", "a": 1}, {"plan_name": "plan"}) == {"a": 1, "plan": "pro"}
    assert rename_traits({"plan_name": "pro", "plan": "old"}, {"plan_name": "plan"}) == {"plan": "pro"}
    assert rename_traits({"a": 1}, {"plan_name": "plan"}) == {"a": 1}
    assert rename_traits({"a": 1}, {}) == {"a": 1}


# ------------------------------------------------------------------------ destinations' own options


def test_clientsuccess_value_property():
    settings = ClientSuccessSettings(source_id="s", value_property="revenue")
    m = msg("track", event="Order", properties={"revenue": 49.5, "value": 2})
    assert cs.decide(settings, m, USER, groups).request.json["value"] == 49.5
    assert cs.decide(replace(settings, value_property="value"), m, USER, groups).request.json["value"] == 2
    no_number = msg("track", event="Order", properties={"revenue": "lots"})
    assert cs.decide(settings, no_number, USER, groups).request.json["value"] == 1


def test_customersuccessbox_trait_renames_on_identify_and_group():
    from streams.destinations.customersuccessbox.settings import CustomerSuccessBoxSettings

    settings = CustomerSuccessBoxSettings(trait_renames={"plan_name": "plan"})
    identify = csb.decide(settings, msg("identify", traits={"plan_name": "pro", "email": "e"}), USER, groups)
    assert identify.request.json["traits"] == {"email": "e", "plan": "pro"}
    group = csb.decide(settings, msg("group", groupId="acme", traits={"plan_name": "pro"}), USER, groups)
    assert group.request.json["traits"] == {"plan": "pro"}
    plain = csb.decide(CustomerSuccessBoxSettings(), msg("identify", traits={"plan_name": "pro"}), USER, groups)
    assert plain.request.json["traits"] == {"plan_name": "pro"}


def test_webhook_trait_renames_in_traits_and_the_added_group():
    from streams.destinations.webhook.settings import WebhookSettings

    settings = WebhookSettings(url="http://x", trait_renames={"plan_name": "plan"})
    identify = wh.decide(settings, msg("identify", traits={"plan_name": "pro"}), USER, groups)
    assert identify.request.json["traits"] == {"plan": "pro"}
    assert identify.request.json["context"]["group"]["traits"] == {"name": "Acme", "plan": "pro"}
    track = wh.decide(settings, msg("track", event="E"), USER, groups)
    assert "traits" not in track.request.json
    plain = wh.decide(WebhookSettings(url="http://x"), msg("identify", traits={"plan_name": "pro"}), USER, groups)
    assert plain.request.json["traits"] == {"plan_name": "pro"}


def test_each_destination_declares_its_options():
    assert set(plugin("clientsuccess").options) == {"value_property"}
    assert set(plugin("customersuccessbox").options) == {"trait_renames"}
    assert set(plugin("webhook").options) == {"trait_renames"}
    for p in REGISTRY:  # every option names a field of the destination's settings
        defaults = p.read_settings(EnvReader({}))
        for name in p.options:
            assert hasattr(defaults, name), (p.key, name)


# ------------------------------------------------------------------------ loading


def test_the_issue_example_loads():
    loaded = parse_toml("""
        [clientsuccess]
        allow = ["Order *", "Report Exported"]   # event names or glob patterns; absent = all
        deny = ["Debug *"]                        # applied after allow
        rename = { "Order Completed" = "Purchase" }
        pages = "single"
        screens = "off"
        value_property = "revenue"
        aggregate = "1h"

        [customersuccessbox]
        trait_renames = { "plan_name" = "plan" }
        aggregate = "off"
    """)
    assert loaded.of("clientsuccess") == DestinationControls(
        allow=("Order *", "Report Exported"),
        deny=("Debug *",),
        rename={"Order Completed": "Purchase"},
        pages="single",
        screens="off",
        aggregate=3600,
        options={"value_property": "revenue"},
    )
    assert loaded.of("customersuccessbox") == DestinationControls(options={"trait_renames": {"plan_name": "plan"}})
    assert loaded.of("webhook") == DestinationControls()
    assert loaded.path == "map.toml"


def test_an_empty_file_is_todays_behaviour():
    assert parse_toml("# nothing yet\n").destinations == {}


@pytest.mark.parametrize("value, seconds", [("30s", 30), ("15m", 900), ("1h", 3600), ("24h", 86400), ("off", None)])
def test_aggregate_durations(value, seconds):
    assert parse_toml(f'[clientsuccess]\naggregate = "{value}"\n').of("clientsuccess").aggregate == seconds


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            '[clientsucess]\npages = "off"\n',
            "map.toml:1: [clientsucess]: unknown destination (known: clientsuccess, customersuccessbox, webhook)",
        ),
        (
            '[webhook]\nvalue_property = "revenue"\n',
            "map.toml:2: [webhook] value_property: unknown option (accepted: allow, deny, rename, pages, screens, "
            "aggregate, consent, trait_renames)",
        ),
        (
            '[clientsuccess]\n\npages = "all"\n',
            'map.toml:3: [clientsuccess] pages: expected "per_page", "single" or "off", not \'all\'',
        ),
        (
            "[clientsuccess]\nscreens = true\n",
            'map.toml:2: [clientsuccess] screens: expected "as_page", "as_event" or "off", not a boolean',
        ),
        (
            '[clientsuccess]\nallow = "Order *"\n',
            'map.toml:2: [clientsuccess] allow: expected a list of event names or patterns, such as ["Order *"], '
            "not a string",
        ),
        (
            '[clientsuccess]\ndeny = ["A", 3]\n',
            "map.toml:2: [clientsuccess] deny: expected event names or patterns as strings, not a number",
        ),
        (
            '[clientsuccess]\nallow = ["Plan [AB"]\n',
            "map.toml:2: [clientsuccess] allow: 'Plan [AB' is not a valid pattern: '[' opens a character set that no "
            "']' closes",
        ),
        ('[clientsuccess]\ndeny = [""]\n', "map.toml:2: [clientsuccess] deny: '' is not a valid pattern: it is empty"),
        (
            '[clientsuccess]\ndeny = ["Debug * "]\n',
            "map.toml:2: [clientsuccess] deny: 'Debug * ' is not a valid pattern: it starts or ends with a space",
        ),
        (
            '[clientsuccess]\nrename = ["a"]\n',
            'map.toml:2: [clientsuccess] rename: expected a table of name to new name, such as { "a" = "b" }, '
            "not a list",
        ),
        (
            '[clientsuccess]\nrename = { "A" = 1 }\n',
            "map.toml:2: [clientsuccess] rename: 'A': expected a non-empty string as its new name, not a number",
        ),
        (
            '[clientsuccess]\nrename = { "A" = "C", "B" = "C" }\n',
            "map.toml:2: [clientsuccess] rename: 'B' and 'A' are both renamed to 'C'",
        ),
        (
            '[clientsuccess]\naggregate = "1 hour"\n',
            'map.toml:2: [clientsuccess] aggregate: expected "off" or a duration such as "30s", "15m" or "1h", '
            "not '1 hour'",
        ),
        (
            "[clientsuccess]\naggregate = 60\n",
            'map.toml:2: [clientsuccess] aggregate: expected "off" or a duration such as "30s", "15m" or "1h", '
            "not a number",
        ),
        (
            '[clientsuccess]\naggregate = "7m"\n',
            "map.toml:2: [clientsuccess] aggregate: '7m' does not divide a day evenly (so a window would cross a GMT "
            "midnight); use e.g. 30s, 15m, 1h, 4h or 24h",
        ),
        (
            '[clientsuccess]\naggregate = "25h"\n',
            "map.toml:2: [clientsuccess] aggregate: '25h' does not divide a day evenly (so a window would cross a GMT "
            "midnight); use e.g. 30s, 15m, 1h, 4h or 24h",
        ),
        (
            '[clientsuccess]\nvalue_property = ""\n',
            "map.toml:2: [clientsuccess] value_property: expected a non-empty string, not ''",
        ),
        (
            '[customersuccessbox]\ntrait_renames = "plan"\n',
            "map.toml:2: [customersuccessbox] trait_renames: expected a table of name to new name, such as "
            '{ "a" = "b" }, not a string',
        ),
        (
            'pages = "single"\n',
            "map.toml:1: pages: a key outside any destination's table (tables: [clientsuccess], [customersuccessbox], "
            "[webhook]), not a string",
        ),
        ("clientsuccess = 3\n", "map.toml:1: clientsuccess: expected a table [clientsuccess], not a number"),
    ],
)
def test_every_error_names_the_file_line_and_key(text, expected):
    assert problems(text) == [expected]


def test_a_toml_syntax_error_names_its_line():
    assert problems('[clientsuccess]\npages = "single"\nallow = [\n  "A"\n  "B"\n]\n') == [
        "map.toml:5: not valid TOML: Unclosed array"
    ]


def test_every_problem_is_listed_in_file_order_with_its_own_line():
    found = problems("""\
        # a comment with pages = "x" in it
        [clientsuccess]
        allow = [
          "Order *",
        ]
        pages = "one"  # pages = "single" would do

        [customersuccessbox]
        pages = "two"
        colour = 3
    """)
    assert [p.split(" ", 1)[0] for p in found] == ["map.toml:6:", "map.toml:9:", "map.toml:10:"]


def test_lines_are_found_for_dotted_inline_and_sub_table_forms():
    found = problems("""\
        clientsuccess.pages = "one"
        customersuccessbox = { allow = ["A"], pages = "two" }

        [webhook]
        allow = ["A"]

        [webhook.rename]
        "A" = 3
    """)
    assert found == [
        'map.toml:1: [clientsuccess] pages: expected "per_page", "single" or "off", not \'one\'',
        'map.toml:2: [customersuccessbox] pages: expected "per_page", "single" or "off", not \'two\'',
        "map.toml:7: [webhook] rename: 'A': expected a non-empty string as its new name, not a number",
    ]


def test_load_file_names_the_path_and_reads_utf8(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text('[webhook]\nrename = { "Café" = "Coffee" }\n', encoding="utf-8")
    assert load_file(str(path), OPTIONS).of("webhook").rename == {"Café": "Coffee"}
    path.write_bytes(b"[webhook]\n# \xff\n")
    with pytest.raises(MappingError, match=r"m.toml:2: not UTF-8 text"):
        load_file(str(path), OPTIONS)
    with pytest.raises(MappingError, match=r"missing.toml: cannot read the mapping file: No such file"):
        load_file(str(tmp_path / "missing.toml"), OPTIONS)


# ------------------------------------------------------------------------ settings and wiring


def test_settings_without_the_variable_are_todays(tmp_path):
    settings = Settings.from_env({})
    assert settings.mappings == Controls()
    assert settings.destinations["clientsuccess"].value_property == "value"


def test_settings_load_the_file_and_bind_each_destinations_options(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text(
        '[clientsuccess]\nvalue_property = "revenue"\npages = "single"\n[webhook]\ntrait_renames = { "a" = "b" }\n'
    )
    settings = Settings.from_env({"CS_RELAY_MAPPINGS": str(path)})
    assert settings.mappings.of("clientsuccess").pages == "single"
    assert settings.destinations["clientsuccess"].value_property == "revenue"
    assert settings.destinations["webhook"].trait_renames == {"a": "b"}
    assert settings.redacted()["mappings"]["destinations"]["clientsuccess"]["pages"] == "single"


def test_settings_stop_at_the_first_problem_and_config_collects_them_all(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text('[clientsuccess]\npages = "one"\n[nowhere]\n')
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"CS_RELAY_MAPPINGS": str(path)})
    assert str(caught.value) == (
        f"CS_RELAY_MAPPINGS (1 of 2): {path}:2: [clientsuccess] pages: expected "
        '"per_page", "single" or "off", not \'one\''
    )
    errors: list[str] = []
    Settings.from_env({"CS_RELAY_MAPPINGS": str(path)}, errors=errors)
    assert errors == [
        f'CS_RELAY_MAPPINGS (1 of 2): {path}:2: [clientsuccess] pages: expected "per_page", "single" or "off", '
        "not 'one'",
        f"CS_RELAY_MAPPINGS (2 of 2): {path}:3: [nowhere]: unknown destination (known: clientsuccess, "
        "customersuccessbox, webhook)",
    ]
    with pytest.raises(SettingsError, match=r"^CS_RELAY_MAPPINGS: .*nope.toml: cannot read"):
        Settings.from_env({"CS_RELAY_MAPPINGS": str(tmp_path / "nope.toml")})


def test_wiring_puts_each_destination_behind_its_own_table(tmp_path):
    from streams.runtime.wiring import destinations

    path = tmp_path / "m.toml"
    path.write_text('[clientsuccess]\ndeny = ["Debug *"]\n')
    settings = Settings.from_env(
        {
            "CS_RELAY_MAPPINGS": str(path),
            "CLIENTSUCCESS_SOURCE_ID": "s",
            "CLIENTSUCCESS_API_KEY": "k",
            "WEBHOOK_URL": "http://127.0.0.1:1/h",
        }
    )
    wired = {d.key: d for d in destinations(settings)}
    debug = msg("track", event="Debug x")
    assert wired["clientsuccess"].decide(debug, USER, groups) == Skip(
        "'Debug x' matches the deny pattern 'Debug *' of the mapping file"
    )
    assert isinstance(wired["webhook"].decide(debug, USER, groups), Send)

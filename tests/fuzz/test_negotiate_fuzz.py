"""Property-based tests of negotiate's inputs: 4,000 generated requests, no crash, no 5xx, no escalation.

Requests go through `function_app.negotiate` as func.HttpRequest (the adapter's query and header
conversion included). Whatever the query, method, content type or body: the answer is 200 or a
4xx naming the problem, and a 200 carries a token for the caller's own user id with roles and
groups inside the policy (NEGOTIATE_GROUPS=chat,news) only.
"""

from __future__ import annotations

import json
from typing import Any

import jwt
from hypothesis import HealthCheck, event, given, strategies as st

import function_app
from shared.policy import roles_for
from shared.runtime import Runtime, use_runtime
from tests.support.fakes import EMULATOR_KEY
from tests.support.functions import http_request
from tests.support.fuzz import generated_inputs, unencodable_text
from tests.support.settings import local_settings

EXAMPLES = 4000
POLICY = ("chat", "news")
POLICY_ROLES = set(roles_for(POLICY))
AUDIENCE = "http://localhost:8080/client/hubs/chat"

group_names = st.sampled_from([*POLICY, "admins", "*", "CHAT", " chat", "webpubsub.sendToGroup.chat", ""]) | st.text(
    max_size=30
)
other_pairs = st.lists(
    st.tuples(st.sampled_from(["userId", "group", "groups", "userid", "role", "x"]), group_names), max_size=8
)
# Usually a caller that names itself first, so that most requests get past identification.
query_pairs = st.builds(
    lambda user, rest: ([("userId", user)] if user is not None else []) + rest,
    st.none() | st.just("alice") | st.text(max_size=20),
    other_pairs,
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | group_names,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=12,
)
# JSON bodies may also hold text UTF-8 cannot encode (lone surrogates, as escapes); error messages naming it
# must still render. (Not in the query: percent-decoding never yields a lone surrogate.)
documents = st.fixed_dictionaries(
    {},
    optional={
        "groups": st.lists(group_names | unencodable_text, max_size=8) | json_values,
        "userId": json_values | unencodable_text,
    },
)
bodies = st.one_of(
    st.just(b""),
    st.binary(max_size=200),
    json_values.map(lambda value: json.dumps(value).encode()),
    documents.map(lambda value: json.dumps(value).encode()),
    st.integers(1, 20_000).map(lambda depth: b"[" * depth),
)
content_types = st.sampled_from(
    ["", "application/json", "application/json; charset=utf-8", "text/plain", "APPLICATION/JSON", "multipart/form-data"]
)


# One runtime for every example: its SDK client is built once, as in the app.
RUNTIME = Runtime(local_settings(NEGOTIATE_GROUPS=",".join(POLICY)))


@generated_inputs(EXAMPLES, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(["GET", "POST"]),
    query=query_pairs,
    content_type=content_types,
    body=bodies,
)
def test_negotiate_answers_200_within_the_policy_or_a_named_4xx(
    method: str, query: list[tuple[str, str]], content_type: str, body: bytes
) -> None:
    use_runtime(RUNTIME)
    headers = {"Content-Type": content_type} if content_type else {}
    response = function_app.negotiate(http_request(method, "negotiate", query=query, headers=headers, body=body))
    document: dict[str, Any] = json.loads(response.get_body().decode("utf-8"))  # valid UTF-8, whatever came in
    event(f"status {response.status_code}")
    assert response.status_code < 500, document
    if response.status_code != 200:
        assert 400 <= response.status_code < 500
        assert document["error"]["code"]
        assert "token" not in document
        return
    claims = jwt.decode(document["token"], EMULATOR_KEY, algorithms=["HS256"], audience=AUDIENCE)
    user_ids = [value for name, value in query if name == "userId"]
    assert claims["sub"] == user_ids[0]
    assert set(claims.get("role", [])) <= POLICY_ROLES
    assert set(claims.get("webpubsub.group", [])) <= set(POLICY)

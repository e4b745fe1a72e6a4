"""Administration-API scenarios against the emulator with the real Python SDK (azure-servicebus 7.15).

Each scenario manages entities with ServiceBusAdministrationClient on the HTTP port, then proves over
AMQP with ServiceBusClient that the setting took effect. Usage: admin_scenarios.py <scenario>; prints
one JSON object. Env: SB_CONN (AMQP connection string), SB_ADMIN_CONN (the HTTP port's).

The https_* scenarios use both clients unchanged, as against Azure: one connection string (or one
credential) naming the namespace, the admin client on https://{namespace}:443 and the AMQP client on
amqps://{namespace}:5671, mapped to the emulator's ports by tests/python/loopback_hosts (ACA_LAB_HOSTS).
Their env: SB_TLS_CONN (that connection string), SB_FQDN (the namespace), SB_CA_FILE (the CA to trust,
the SDK's connection_verify), SB_JWT and SB_JWT_EXP (the token a managed identity would get).
"""

import datetime
import json
import os
import sys

from azure.core.credentials import AccessToken
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.servicebus import ServiceBusClient, ServiceBusMessage, ServiceBusSubQueue
from azure.servicebus.exceptions import ServiceBusError
from azure.servicebus.management import (
    CorrelationRuleFilter,
    FalseRuleFilter,
    ServiceBusAdministrationClient,
    SqlRuleAction,
    SqlRuleFilter,
)

CONN = os.environ["SB_CONN"]
ADMIN_CONN = os.environ["SB_ADMIN_CONN"]
WAIT = 5


def admin(conn=ADMIN_CONN):
    client = ServiceBusAdministrationClient.from_connection_string(conn)
    # The SDK builds https:// URLs even for the emulator; this one line makes it use plain HTTP
    # (the official emulator's Python sample does the same).
    client._impl._client._base_url = "http://{endpoint}"
    return client


def sb():
    return ServiceBusClient.from_connection_string(CONN)


def body(msg):
    return b"".join(msg.body).decode()


def expect(error, call):
    try:
        call()
    except error as e:
        return str(e)
    raise AssertionError(f"expected {error.__name__}")


def queue_lifecycle():
    a = admin()
    created = a.create_queue(
        "fresh",
        max_delivery_count=2,
        lock_duration=datetime.timedelta(seconds=30),
        default_message_time_to_live=datetime.timedelta(minutes=10),
    )
    assert created.name == "fresh", created.name
    got = a.get_queue("fresh")
    assert got.max_delivery_count == 2
    assert got.lock_duration == datetime.timedelta(seconds=30), got.lock_duration
    with sb() as c:
        with c.get_queue_sender("fresh") as s:
            s.send_messages(ServiceBusMessage("poison"))
        with c.get_queue_receiver("fresh", max_wait_time=WAIT) as r:
            deliveries = 0
            for _ in range(3):
                got_msgs = r.receive_messages(max_message_count=1, max_wait_time=2)
                if not got_msgs:
                    break
                deliveries += 1
                r.abandon_message(got_msgs[0])
        with c.get_queue_receiver("fresh", sub_queue=ServiceBusSubQueue.DEAD_LETTER, max_wait_time=WAIT) as d:
            dead = d.receive_messages(max_message_count=1, max_wait_time=WAIT)
            assert len(dead) == 1
            reason = dead[0].dead_letter_reason
            d.complete_message(dead[0])
    runtime = a.get_queue_runtime_properties("fresh")
    conflict = expect(ResourceExistsError, lambda: a.create_queue("fresh"))

    got.max_delivery_count = 5
    got.lock_duration = datetime.timedelta(seconds=10)
    a.update_queue(got)
    updated = a.get_queue("fresh")
    a.delete_queue("fresh")
    missing = expect(ResourceNotFoundError, lambda: a.get_queue("fresh"))
    delete_missing = expect(ResourceNotFoundError, lambda: a.delete_queue("fresh"))
    def send_to_deleted():
        with sb() as c:
            with c.get_queue_sender("fresh") as s:
                s.send_messages(ServiceBusMessage("x"))

    send_after_delete = expect(ServiceBusError, send_to_deleted)
    return {
        "deliveries": deliveries,
        "reason": reason,
        "dead_letter_count_after_complete": runtime.dead_letter_message_count,
        "conflict": conflict[:80],
        "updated_max_delivery_count": updated.max_delivery_count,
        "updated_lock_seconds": updated.lock_duration.total_seconds(),
        "missing": bool(missing),
        "delete_missing": bool(delete_missing),
        "send_after_delete": send_after_delete[:200],
    }


def runtime_properties():
    a = admin()
    a.create_queue("counted")
    with sb() as c:
        with c.get_queue_sender("counted") as s:
            s.send_messages([ServiceBusMessage(f"m{i}") for i in range(3)])
            s.schedule_messages(
                ServiceBusMessage("later"),
                datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1),
            )
        with c.get_queue_receiver("counted", max_wait_time=WAIT) as r:
            m = r.receive_messages(max_message_count=1, max_wait_time=WAIT)[0]
            r.dead_letter_message(m, reason="test")
    rt = a.get_queue_runtime_properties("counted")
    listed = {q.name: q for q in a.list_queues_runtime_properties()}
    return {
        "active": rt.active_message_count,
        "dead_letter": rt.dead_letter_message_count,
        "scheduled": rt.scheduled_message_count,
        "total": rt.total_message_count,
        "transfer": rt.transfer_message_count,
        "created_is_recent": abs((datetime.datetime.now(datetime.timezone.utc) - rt.created_at_utc).total_seconds()) < 60,
        "listed_active": listed["counted"].active_message_count,
    }


def list_paging():
    a = admin()
    for name in ["p-c", "p-a", "p-e", "p-b", "p-d"]:
        a.create_queue(name)
    pages = []
    for page in a.list_queues(max_page_size=2).by_page():
        pages.append([q.name for q in page])
    all_names = [q.name for q in a.list_queues()]
    return {"pages": pages, "all": all_names}


def topics_and_rules():
    a = admin()
    t = a.create_topic("events", default_message_time_to_live=datetime.timedelta(minutes=30))
    a.create_subscription("events", "all")
    a.create_subscription("events", "red", max_delivery_count=3)
    a.delete_rule("events", "red", "$Default")
    a.create_rule(
        "events",
        "red",
        "is-red",
        filter=SqlRuleFilter("color = 'red'"),
        action=SqlRuleAction("SET handled = 'yes'"),
    )
    a.create_subscription("events", "urgent")
    a.delete_rule("events", "urgent", "$Default")
    a.create_rule(
        "events",
        "urgent",
        "prio",
        filter=CorrelationRuleFilter(label="alert", properties={"priority": 2}),
    )
    a.create_subscription("events", "none")
    a.delete_rule("events", "none", "$Default")
    a.create_rule("events", "none", "never", filter=FalseRuleFilter())
    bad_sql = expect(
        HttpResponseError,
        lambda: a.create_rule("events", "red", "broken", filter=SqlRuleFilter("color = = 'x'")),
    )
    rules = {r.name: r for r in a.list_rules("events", "red")}
    prio = a.get_rule("events", "urgent", "prio")
    with sb() as c:
        with c.get_topic_sender("events") as s:
            s.send_messages(ServiceBusMessage("r", application_properties={"color": "red"}))
            s.send_messages(ServiceBusMessage("b", application_properties={"color": "blue"}))
            s.send_messages(ServiceBusMessage("u", subject="alert", application_properties={"priority": 2}))
        got = {}
        for sub in ["all", "red", "urgent", "none"]:
            with c.get_subscription_receiver("events", sub, max_wait_time=2) as r:
                msgs = r.receive_messages(max_message_count=10, max_wait_time=2)
                got[sub] = sorted(body(m) for m in msgs)
                if sub == "red" and msgs:
                    got["red_handled"] = msgs[0].application_properties.get(b"handled", b"").decode()
                for m in msgs:
                    r.complete_message(m)
    # Updates take effect for the next message: the rule now selects blue, and the subscription
    # dead-letters on the first abandon.
    rule = a.get_rule("events", "red", "is-red")
    rule.filter = SqlRuleFilter("color = 'blue'")
    a.update_rule("events", "red", rule)
    red = a.get_subscription("events", "red")
    red.max_delivery_count = 1
    a.update_subscription("events", red)
    with sb() as c:
        with c.get_topic_sender("events") as s:
            s.send_messages(ServiceBusMessage("b2", application_properties={"color": "blue"}))
            s.send_messages(ServiceBusMessage("r2", application_properties={"color": "red"}))
        with c.get_subscription_receiver("events", "red", max_wait_time=2) as r:
            msgs = r.receive_messages(max_message_count=10, max_wait_time=2)
            got["red_after_update"] = sorted(body(m) for m in msgs)
            for m in msgs:
                r.abandon_message(m)
        with c.get_subscription_receiver(
            "events", "red", sub_queue=ServiceBusSubQueue.DEAD_LETTER, max_wait_time=2
        ) as d:
            got["red_dead_lettered"] = sorted(body(m) for m in d.receive_messages(max_message_count=10, max_wait_time=2))
    topic_rt = a.get_topic_runtime_properties("events")
    subs = [s.name for s in a.list_subscriptions("events")]
    a.delete_subscription("events", "none")
    sub_missing = expect(ResourceNotFoundError, lambda: a.get_subscription("events", "none"))
    a.delete_topic("events")
    topic_missing = expect(ResourceNotFoundError, lambda: a.get_topic("events"))
    return {
        "topic_ttl_minutes": t.default_message_time_to_live.total_seconds() / 60,
        "got": got,
        "rules": sorted(rules),
        "sql": rules["is-red"].filter.sql_expression,
        "action": rules["is-red"].action.sql_expression,
        "prio_label": prio.filter.label,
        "prio_properties": prio.filter.properties,
        "bad_sql": bad_sql[:300],
        "subscription_count": topic_rt.subscription_count,
        "subscriptions": subs,
        "sub_missing": bool(sub_missing),
        "topic_missing": bool(topic_missing),
    }


def forwarding():
    a = admin()
    a.create_queue("fwd-target")
    a.create_queue("fwd-source", forward_to="fwd-target")
    with sb() as c:
        with c.get_queue_sender("fwd-source") as s:
            s.send_messages(ServiceBusMessage("hop"))
        with c.get_queue_receiver("fwd-target", max_wait_time=WAIT) as r:
            msgs = r.receive_messages(max_message_count=1, max_wait_time=WAIT)
            for m in msgs:
                r.complete_message(m)
    src = a.get_queue("fwd-source")
    return {"forwarded": [body(m) for m in msgs], "forward_to": src.forward_to}


def dedup_and_expiry():
    """RequiresDuplicateDetection and DeadLetteringOnMessageExpiration set at creation take effect."""
    import time

    a = admin()
    a.create_queue(
        "guarded",
        requires_duplicate_detection=True,
        duplicate_detection_history_time_window=datetime.timedelta(minutes=1),
        dead_lettering_on_message_expiration=True,
        default_message_time_to_live=datetime.timedelta(seconds=2),
    )
    props = a.get_queue("guarded")
    with sb() as c:
        with c.get_queue_sender("guarded") as s:
            s.send_messages(ServiceBusMessage("once", message_id="same"))
            s.send_messages(ServiceBusMessage("twice", message_id="same"))
        after_send = a.get_queue_runtime_properties("guarded").active_message_count
        time.sleep(3)
        with c.get_queue_receiver("guarded", sub_queue=ServiceBusSubQueue.DEAD_LETTER, max_wait_time=WAIT) as d:
            dead = d.receive_messages(max_message_count=10, max_wait_time=WAIT)
            for m in dead:
                d.complete_message(m)
    return {
        "requires_duplicate_detection": props.requires_duplicate_detection,
        "dead_lettering_on_message_expiration": props.dead_lettering_on_message_expiration,
        "ttl_seconds": props.default_message_time_to_live.total_seconds(),
        "active_after_duplicate_send": after_send,
        "expired_to_dlq": [body(m) for m in dead],
        "reason": dead[0].dead_letter_reason if dead else None,
    }


def wrong_key():
    conn = ADMIN_CONN.replace("SAS_KEY_VALUE", "not-the-key")
    a = admin(conn)
    error = expect(ClientAuthenticationError, lambda: a.get_queue("queue-messages"))
    return {"error": error[:200]}


def namespace():
    a = admin()
    ns = a.get_namespace_properties()
    existing = a.get_queue("queue-messages")
    return {"name": ns.name, "sku": ns.messaging_sku, "configured_queue": existing.name}


def receiver_on_deleted_queue():
    a = admin()
    a.create_queue("doomed")
    with sb() as c:
        with c.get_queue_receiver("doomed", max_wait_time=WAIT) as r:
            r.receive_messages(max_message_count=1, max_wait_time=1)
            a.delete_queue("doomed")
            error = expect(ServiceBusError, lambda: r.receive_messages(max_message_count=1, max_wait_time=3))
    return {"error": error[:200]}


def bench():
    """Not a test: what a user of the SDK waits for (docs/benchmarks.md). SB_BENCH_QUEUES sets how
    many queues the create-then-list measure makes (default 1000)."""
    import statistics
    import time

    a = admin()
    latencies = []
    with sb() as c:
        for i in range(20):
            name = f"lat-{i}"
            t0 = time.perf_counter()
            a.create_queue(name)
            with c.get_queue_sender(name) as s:
                s.send_messages(ServiceBusMessage("first"))
            with c.get_queue_receiver(name, max_wait_time=WAIT) as r:
                got = r.receive_messages(max_message_count=1, max_wait_time=WAIT)
                assert len(got) == 1
                latencies.append((time.perf_counter() - t0) * 1000)
                r.complete_message(got[0])
    count = int(os.environ.get("SB_BENCH_QUEUES", "1000"))
    t0 = time.perf_counter()
    for i in range(count):
        a.create_queue(f"many-{i:04}")
    created = time.perf_counter() - t0
    t0 = time.perf_counter()
    listed = sum(1 for q in a.list_queues() if q.name.startswith("many-"))
    listing = time.perf_counter() - t0
    assert listed == count, listed
    return {
        "create_to_first_receive_ms_median": round(statistics.median(latencies), 1),
        "create_to_first_receive_ms_max": round(max(latencies), 1),
        "queues": count,
        "create_s": round(created, 2),
        "list_s": round(listing, 2),
    }


def send_and_receive(client, queue, text):
    with client.get_queue_sender(queue) as s:
        s.send_messages(ServiceBusMessage(text))
    with client.get_queue_receiver(queue, max_wait_time=WAIT) as r:
        got = r.receive_messages(max_message_count=1, max_wait_time=WAIT)
        assert len(got) == 1, f"expected one message on {queue}, got {len(got)}"
        r.complete_message(got[0])
    return body(got[0])


def https_connection_string():
    """The AMQP client's connection string, unchanged, for the admin client too (no base-URL patch)."""
    conn, ca = os.environ["SB_TLS_CONN"], os.environ["SB_CA_FILE"]
    with ServiceBusAdministrationClient.from_connection_string(conn, connection_verify=ca) as a:
        a.create_queue("made-over-https", max_delivery_count=3)
        queue = a.get_queue("made-over-https")
        listed = sorted(q.name for q in a.list_queues())
    with ServiceBusClient.from_connection_string(conn, connection_verify=ca) as c:
        got = send_and_receive(c, "made-over-https", "created over https")
    return {"max_delivery_count": queue.max_delivery_count, "listed": listed, "got": got}


class ManagedIdentityStandIn:
    """A TokenCredential handing out the test's JWT, recording the scopes it is asked for."""

    def __init__(self, token=None):
        self.token = token or os.environ["SB_JWT"]
        self.scopes = []

    def get_token(self, *scopes, **kwargs):
        self.scopes.extend(scopes)
        return AccessToken(self.token, int(os.environ["SB_JWT_EXP"]))


def https_entra():
    """One credential for both clients, as with DefaultAzureCredential in Azure; a bad token is 401."""
    fqdn, ca = os.environ["SB_FQDN"], os.environ["SB_CA_FILE"]
    credential = ManagedIdentityStandIn()
    with ServiceBusAdministrationClient(fqdn, credential, connection_verify=ca) as a:
        a.create_queue("made-with-entra")
        a.create_queue("entra-forwarder", forward_to="made-with-entra")
        forward_to = a.get_queue("entra-forwarder").forward_to
    with ServiceBusClient(fqdn, credential, connection_verify=ca) as c:
        got = send_and_receive(c, "made-with-entra", "created with an entra token")
        with c.get_queue_sender("entra-forwarder") as s:
            s.send_messages(ServiceBusMessage("forwarded"))
        with c.get_queue_receiver("made-with-entra", max_wait_time=WAIT) as r:
            received = r.receive_messages(max_message_count=5, max_wait_time=WAIT)
            forwarded = [body(m) for m in received]
            for m in received:
                r.complete_message(m)
    stranger = ManagedIdentityStandIn(os.environ["SB_JWT_OTHER_SERVICE"])
    with ServiceBusAdministrationClient(fqdn, stranger, connection_verify=ca) as a:
        refused = expect(HttpResponseError, lambda: a.get_queue("made-with-entra"))
    return {
        "got": got,
        "forward_to": forward_to,
        "forwarded": forwarded,
        "scopes": sorted(set(credential.scopes)),
        "refused": refused,
    }


SCENARIOS = {
    f.__name__: f
    for f in [
        queue_lifecycle,
        runtime_properties,
        list_paging,
        topics_and_rules,
        forwarding,
        dedup_and_expiry,
        wrong_key,
        namespace,
        receiver_on_deleted_queue,
        https_connection_string,
        https_entra,
        bench,
    ]
}


def main():
    if len(sys.argv) != 2 or sys.argv[1] not in SCENARIOS:
        sys.exit(f"usage: {sys.argv[0]} <{'|'.join(SCENARIOS)}>")
    print(json.dumps(SCENARIOS[sys.argv[1]](), default=str))


if __name__ == "__main__":
    main()

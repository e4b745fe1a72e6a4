"""Service Bus scenarios run with the official Python SDK against the emulator.

Usage: python scenarios.py <scenario>
Environment: SB_CONN (connection string), SB_QUEUE (queue name), SB_TOPIC (topic name, for the topic
scenarios; the Rust test declares its subscriptions and rules). The session scenarios expect SB_QUEUE
to require sessions.

Each scenario asserts what the SDK sees and prints one JSON object on the last line of stdout, which
the Rust test (emulator/tests/python_sdk.rs) parses and asserts again. Any failure exits non-zero
with the traceback on stderr.
"""

import datetime
import json
import os
import sys
import time
import uuid

from azure.servicebus import (
    NEXT_AVAILABLE_SESSION,
    ServiceBusClient,
    ServiceBusMessage,
    ServiceBusReceiveMode,
    ServiceBusSubQueue,
)
from azure.servicebus.exceptions import MessageLockLostError, SessionLockLostError

CONN = os.environ["SB_CONN"]
QUEUE = os.environ["SB_QUEUE"]
TOPIC = os.environ.get("SB_TOPIC", "orders")
WAIT = 5  # seconds a receive waits for messages


def client():
    return ServiceBusClient.from_connection_string(CONN)


def body(msg):
    return b"".join(msg.body).decode()


def send(sb, messages):
    """Send one message or a list with a sender of its own, closed before what follows."""
    with sb.get_queue_sender(QUEUE) as sender:
        sender.send_messages(messages)


def receive_one(receiver):
    got = receiver.receive_messages(max_message_count=1, max_wait_time=WAIT)
    assert len(got) == 1, f"expected one message, got {len(got)}"
    return got[0]


def receive_all(receiver, complete=True):
    """Everything the receiver gets until a receive comes back empty (completed unless told not to)."""
    out = []
    while True:
        got = receiver.receive_messages(max_message_count=10, max_wait_time=1)
        if not got:
            return out
        for m in got:
            out.append(m)
            if complete:
                receiver.complete_message(m)


def send_receive_complete():
    with client() as sb:
        with sb.get_queue_sender(QUEUE) as sender:
            sender.send_messages(ServiceBusMessage("single"))
            sender.send_messages([ServiceBusMessage(f"list-{i}") for i in range(2)])
            batch = sender.create_message_batch()
            for i in range(3):
                batch.add_message(ServiceBusMessage(f"batch-{i}"))
            sender.send_messages(batch)
        bodies = []
        with sb.get_queue_receiver(QUEUE) as receiver:
            while len(bodies) < 6:
                got = receiver.receive_messages(max_message_count=10, max_wait_time=WAIT)
                assert got, f"only {len(bodies)} of 6 messages arrived"
                for m in got:
                    assert m.delivery_count == 0, m.delivery_count
                    assert m.lock_token is not None
                    assert m.sequence_number is not None
                    bodies.append(body(m))
                    receiver.complete_message(m)
            left = receiver.receive_messages(max_message_count=1, max_wait_time=1)
        assert sorted(bodies) == sorted(
            ["single", "list-0", "list-1", "batch-0", "batch-1", "batch-2"]
        ), bodies
        return {"bodies": bodies, "left_after_complete": len(left)}


def abandon():
    with client() as sb:
        send(sb, ServiceBusMessage("again"))
        with sb.get_queue_receiver(QUEUE) as receiver:
            first = receive_one(receiver)
            first_token = str(first.lock_token)
            receiver.abandon_message(first)
            second = receive_one(receiver)
            assert body(second) == "again"
            receiver.complete_message(second)
        return {
            "first_delivery_count": first.delivery_count,
            "second_delivery_count": second.delivery_count,
            "new_lock_token": str(second.lock_token) != first_token,
        }


def dead_letter():
    with client() as sb:
        send(sb, ServiceBusMessage("poison"))
        with sb.get_queue_receiver(QUEUE) as receiver:
            m = receive_one(receiver)
            receiver.dead_letter_message(m, reason="BadInput", error_description="field x is missing")
            left = receiver.receive_messages(max_message_count=1, max_wait_time=1)
        with sb.get_queue_receiver(QUEUE, sub_queue=ServiceBusSubQueue.DEAD_LETTER) as dlq:
            d = receive_one(dlq)
            dlq.complete_message(d)
        return {
            "body": body(d),
            "reason": d.dead_letter_reason,
            "description": d.dead_letter_error_description,
            "left_in_queue": len(left),
        }


def defer():
    with client() as sb:
        send(sb, ServiceBusMessage("later"))
        with sb.get_queue_receiver(QUEUE) as receiver:
            m = receive_one(receiver)
            seq = m.sequence_number
            receiver.defer_message(m)
            normal = receiver.receive_messages(max_message_count=1, max_wait_time=1)
            deferred = receiver.receive_deferred_messages([seq])
            assert len(deferred) == 1
            receiver.complete_message(deferred[0])
        return {
            "sequence_number": seq,
            "deferred_body": body(deferred[0]),
            "deferred_sequence_number": deferred[0].sequence_number,
            "visible_to_normal_receive": len(normal),
        }


def peek():
    with client() as sb:
        send(sb, [ServiceBusMessage(f"p{i}") for i in range(3)])
        with sb.get_queue_receiver(QUEUE) as receiver:
            peeked = receiver.peek_messages(max_message_count=5)
            received = []
            while len(received) < 3:
                got = receiver.receive_messages(max_message_count=3, max_wait_time=WAIT)
                assert got
                for m in got:
                    received.append(body(m))
                    receiver.complete_message(m)
        return {
            "peeked": [body(m) for m in peeked],
            "peeked_sequence_numbers": [m.sequence_number for m in peeked],
            "received_after_peek": sorted(received),
        }


def renew_lock():
    """Needs a queue with a short LockDuration (the Rust test configures PT4S).

    A later `locked_until` alone proves nothing: the completion after the original lock would have
    expired is what only a broker that really extended the lock accepts.
    """
    with client() as sb:
        send(sb, ServiceBusMessage("slow"))
        with sb.get_queue_receiver(QUEUE) as receiver:
            m = receive_one(receiver)
            before = m.locked_until_utc
            time.sleep(2)
            after = receiver.renew_message_lock(m)
            # One second past the original expiry, still well inside the renewed lock.
            now = datetime.datetime.now(datetime.timezone.utc)
            time.sleep(max((before - now).total_seconds() + 1, 0))
            completed_at = datetime.datetime.now(datetime.timezone.utc)
            receiver.complete_message(m)
            again = receiver.receive_messages(max_message_count=1, max_wait_time=1)
        return {
            "before": before.isoformat(),
            "after": after.isoformat(),
            "extended": after > before,
            "completed_after_original_expiry": completed_at > before,
            "completed_within_renewed_lock": completed_at < after,
            "redelivered": len(again),
        }


def schedule():
    with client() as sb:
        future = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
        with sb.get_queue_sender(QUEUE) as sender:
            seqs = sender.schedule_messages(
                [ServiceBusMessage("s-keep"), ServiceBusMessage("s-cancel")], future
            )
            assert len(seqs) == 2, seqs
            sender.cancel_scheduled_messages(seqs[1])
            # Far enough ahead that the "not yet" receive below happens before it is due, even on a
            # loaded machine; the receive after it waits long enough for it to arrive.
            soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=5)
            soon_seq = sender.schedule_messages(ServiceBusMessage("s-soon"), soon)
        with sb.get_queue_receiver(QUEUE) as receiver:
            peeked = receiver.peek_messages(max_message_count=10)
            immediate = receiver.receive_messages(max_message_count=1, max_wait_time=0.5)
            got = receiver.receive_messages(max_message_count=1, max_wait_time=20)
            assert len(got) == 1, "the message scheduled 5 s ahead did not arrive within 20 s"
            got = got[0]
            receiver.complete_message(got)
        return {
            "sequence_numbers": seqs,
            "peeked": sorted(body(m) for m in peeked),
            "received_before_due": len(immediate),
            "received_when_due": body(got),
            "soon_sequence_number": soon_seq[0],
        }


def receive_and_delete():
    with client() as sb:
        send(sb, [ServiceBusMessage("rd-0"), ServiceBusMessage("rd-1")])
        with sb.get_queue_receiver(
            QUEUE, receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE
        ) as receiver:
            got = []
            while len(got) < 2:
                batch = receiver.receive_messages(max_message_count=2, max_wait_time=WAIT)
                assert batch
                got.extend(body(m) for m in batch)
        with sb.get_queue_receiver(QUEUE) as receiver:
            left = receiver.receive_messages(max_message_count=1, max_wait_time=1)
        return {"bodies": sorted(got), "left": len(left)}


def lock_lost():
    """Needs a queue with a short LockDuration (the Rust test configures PT2S)."""
    with client() as sb:
        send(sb, ServiceBusMessage("too-slow"))
        with sb.get_queue_receiver(QUEUE) as receiver:
            m = receive_one(receiver)
            time.sleep(3)
            error = None
            try:
                receiver.complete_message(m)
            except MessageLockLostError as e:
                error = type(e).__name__
            again = receive_one(receiver)
            receiver.complete_message(again)
        return {
            "error": error,
            "redelivered_body": body(again),
            "redelivered_delivery_count": again.delivery_count,
        }


def max_delivery():
    """Needs a queue with MaxDeliveryCount 2."""
    with client() as sb:
        send(sb, ServiceBusMessage("flaky"))
        with sb.get_queue_receiver(QUEUE) as receiver:
            for _ in range(2):
                receiver.abandon_message(receive_one(receiver))
            left = receiver.receive_messages(max_message_count=1, max_wait_time=1)
        with sb.get_queue_receiver(QUEUE, sub_queue=ServiceBusSubQueue.DEAD_LETTER) as dlq:
            d = receive_one(dlq)
            dlq.complete_message(d)
        return {"left_in_queue": len(left), "dlq_body": body(d), "reason": d.dead_letter_reason}


def wrong_key():
    bad = CONN.replace("SharedAccessKey=SAS_KEY_VALUE", "SharedAccessKey=not-the-key")
    assert bad != CONN
    error = None
    with ServiceBusClient.from_connection_string(bad, retry_total=0) as sb:
        try:
            with sb.get_queue_sender(QUEUE) as sender:
                sender.send_messages(ServiceBusMessage("intruder"))
        except Exception as e:  # the SDK raises ServiceBusAuthenticationError (or a subclass)
            error = type(e).__name__
    return {"error": error}


def properties():
    message_id = str(uuid.uuid4())
    sent = ServiceBusMessage(
        "with-props",
        application_properties={
            "str": "text",
            "int": 42,
            "neg": -7,
            "float": 1.5,
            "bool": True,
        },
        message_id=message_id,
        correlation_id="corr-1",
        subject="the-subject",
        content_type="application/json",
        reply_to="reply-queue",
        to="somewhere",
        time_to_live=datetime.timedelta(minutes=5),
    )
    with client() as sb:
        send(sb, sent)
        with sb.get_queue_receiver(QUEUE) as receiver:
            m = receive_one(receiver)
            receiver.complete_message(m)
    props = {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in (m.application_properties or {}).items()
    }
    assert m.message_id == message_id, (m.message_id, message_id)
    return {
        "application_properties": props,
        "message_id_matches": m.message_id == message_id,
        "correlation_id": m.correlation_id,
        "subject": m.subject,
        "content_type": m.content_type,
        "reply_to": m.reply_to,
        "to": m.to,
        "time_to_live_seconds": m.time_to_live.total_seconds() if m.time_to_live else None,
        "enqueued_time_set": m.enqueued_time_utc is not None,
        "body": body(m),
    }


def throughput():
    """Benchmark, not a test: SB_COUNT messages sent in batches of 100, then received 100 at a time
    and completed one by one (each completion waits for the broker's settlement echo)."""
    count = int(os.environ.get("SB_COUNT", "2000"))
    with client() as sb:
        start = time.perf_counter()
        with sb.get_queue_sender(QUEUE) as sender:
            for offset in range(0, count, 100):
                sender.send_messages([ServiceBusMessage("x" * 256) for _ in range(min(100, count - offset))])
        sent = time.perf_counter()
        done = 0
        with sb.get_queue_receiver(QUEUE, prefetch_count=100) as receiver:
            while done < count:
                got = receiver.receive_messages(max_message_count=100, max_wait_time=WAIT)
                assert got, f"only {done} of {count} arrived"
                for m in got:
                    receiver.complete_message(m)
                done += len(got)
        end = time.perf_counter()
    return {
        "count": count,
        "send_per_second": round(count / (sent - start)),
        "receive_complete_per_second": round(count / (end - sent)),
        "send_receive_complete_per_second": round(count / (end - start)),
    }


# ---- topics: the Rust test (python_sdk.rs, `topic_config`) declares the topic's subscriptions ----


def props_of(m):
    return {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in (m.application_properties or {}).items()
    }


def drain(sb, subscription, sub_queue=None, complete=True):
    """Everything one subscription holds now, completed."""
    with sb.get_subscription_receiver(TOPIC, subscription, sub_queue=sub_queue) as receiver:
        return receive_all(receiver, complete)


def topic_fan_out():
    with client() as sb:
        with sb.get_topic_sender(TOPIC) as sender:
            sender.send_messages(
                [
                    ServiceBusMessage("red-order", subject="Orders", application_properties={"color": "red", "quantity": 1}),
                    ServiceBusMessage("blue-order", subject="Orders", application_properties={"color": "blue", "quantity": 10}),
                    ServiceBusMessage("blue-other", subject="Other", application_properties={"color": "blue", "quantity": 10}),
                ]
            )
        got = {name: drain(sb, name) for name in ["all", "all2", "red", "sql", "norules", "act"]}
    act = got["act"][0] if got["act"] else None
    red_in_all = next(m for m in got["all"] if body(m) == "red-order")
    return {
        "bodies": {name: [body(m) for m in ms] for name, ms in got.items()},
        "sequence_numbers": {name: [m.sequence_number for m in ms] for name, ms in got.items()},
        "act_properties": props_of(act) if act else None,
        "act_subject": act.subject if act else None,
        "all_properties_of_red": props_of(red_in_all),
        "all_subject_of_red": red_in_all.subject,
    }


def topic_dead_letter():
    with client() as sb:
        with sb.get_topic_sender(TOPIC) as sender:
            sender.send_messages(ServiceBusMessage("poison"))
        with sb.get_subscription_receiver(TOPIC, "all") as receiver:
            m = receive_one(receiver)
            receiver.dead_letter_message(m, reason="BadInput", error_description="no good")
        dead = drain(sb, "all", sub_queue=ServiceBusSubQueue.DEAD_LETTER)
        other = drain(sb, "all2")
    return {
        "dead": [body(m) for m in dead],
        "reason": dead[0].dead_letter_reason,
        "description": dead[0].dead_letter_error_description,
        "source": dead[0].dead_letter_source,
        "other_subscription": [body(m) for m in other],
    }


def topic_schedule():
    with client() as sb:
        with sb.get_topic_sender(TOPIC) as sender:
            later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
            seqs = sender.schedule_messages([ServiceBusMessage("t-keep"), ServiceBusMessage("t-cancel")], later)
            sender.cancel_scheduled_messages(seqs[1])
            soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=3)
            sender.schedule_messages(ServiceBusMessage("t-soon"), soon)
        with sb.get_subscription_receiver(TOPIC, "all") as receiver:
            before = receiver.receive_messages(max_message_count=1, max_wait_time=0.5)
            got = receiver.receive_messages(max_message_count=1, max_wait_time=20)
            assert len(got) == 1, "the message scheduled 3 s ahead did not reach the subscription"
            receiver.complete_message(got[0])
        other = drain(sb, "all2")
    return {
        "received_before_due": len(before),
        "received_when_due": body(got[0]),
        "other_subscription": [body(m) for m in other],
        "sequence_numbers": seqs,
    }


def topic_peek_defer():
    with client() as sb:
        with sb.get_topic_sender(TOPIC) as sender:
            sender.send_messages([ServiceBusMessage("d0"), ServiceBusMessage("d1")])
        with sb.get_subscription_receiver(TOPIC, "all") as receiver:
            peeked = receiver.peek_messages(max_message_count=5)
            m = receive_one(receiver)
            seq = m.sequence_number
            receiver.defer_message(m)
            rest = receive_one(receiver)
            receiver.complete_message(rest)
            nothing = receiver.receive_messages(max_message_count=1, max_wait_time=1)
            deferred = receiver.receive_deferred_messages([seq])
            renewed = receiver.renew_message_lock(deferred[0])
            receiver.complete_message(deferred[0])
    return {
        "peeked": [body(m) for m in peeked],
        "deferred": body(deferred[0]),
        "visible_while_deferred": len(nothing),
        "renewed": renewed is not None,
    }


def topic_forward():
    with client() as sb:
        with sb.get_topic_sender(TOPIC) as sender:
            sender.send_messages(ServiceBusMessage("via-fwd", application_properties={"color": "green"}))
        with sb.get_queue_receiver(QUEUE) as receiver:
            m = receive_one(receiver)
            receiver.complete_message(m)
        in_fwd = drain(sb, "fwd")
    return {"queue_got": body(m), "left_in_forwarding_subscription": len(in_fwd)}


def topic_errors():
    """Unknown entities and sends to a subscription are refused, naming the entity."""
    errors = {}
    with client() as sb:
        for name, make in [
            ("unknown_topic", lambda: sb.get_topic_sender("no-such-topic")),
            ("send_to_subscription", lambda: sb.get_queue_sender(f"{TOPIC}/Subscriptions/all")),
        ]:
            try:
                with make() as sender:
                    sender.send_messages(ServiceBusMessage("x"))
                errors[name] = None
            except Exception as e:
                errors[name] = f"{type(e).__name__}: {e}"
        try:
            with sb.get_subscription_receiver(TOPIC, "no-such-sub") as receiver:
                receiver.receive_messages(max_message_count=1, max_wait_time=1)
            errors["unknown_subscription"] = None
        except Exception as e:
            errors["unknown_subscription"] = f"{type(e).__name__}: {e}"
    return errors


def official_sample():
    """The official emulator's sample Config.json: topic.1 with a correlation rule, a user-property
    rule, a subscription without rules and a SQL rule with an action."""
    with client() as sb:
        with sb.get_topic_sender("topic.1") as sender:
            sender.send_messages(
                [
                    ServiceBusMessage("json", content_type="application/json"),
                    ServiceBusMessage("text", content_type="text/plain", application_properties={"prop1": "value1"}),
                    ServiceBusMessage("sql", message_id="123456", application_properties={"userProp1": "value1"}),
                ]
            )
        got = {}
        for sub in ["subscription.1", "subscription.2", "subscription.3", "subscription.4"]:
            with sb.get_subscription_receiver("topic.1", sub) as receiver:
                ms = []
                while True:
                    batch = receiver.receive_messages(max_message_count=10, max_wait_time=1)
                    if not batch:
                        break
                    for m in batch:
                        receiver.complete_message(m)
                    ms.extend(batch)
                got[sub] = ms
    return {
        "bodies": {k: sorted(body(m) for m in v) for k, v in got.items()},
        "sql_to": got["subscription.4"][0].to if got["subscription.4"] else None,
    }


# ---- sessions: the Rust test declares SB_QUEUE with RequiresSession (and a session subscription) ----


def error_name(f):
    """Run f; the exception's class name and text, or None when it succeeded."""
    try:
        f()
        return None
    except Exception as e:  # noqa: BLE001 - the scenario reports whatever the SDK raised
        return f"{type(e).__name__}: {e}"


def send_sessions(sb, pairs):
    with sb.get_queue_sender(QUEUE) as sender:
        sender.send_messages([ServiceBusMessage(b, session_id=s) for s, b in pairs])


def session_specific():
    with client() as sb:
        send_sessions(sb, [("s1", "a1"), ("s2", "b1"), ("s1", "a2"), ("s2", "b2"), ("s1", "a3")])
        with sb.get_queue_receiver(QUEUE, session_id="s1") as receiver:
            session = receiver.session
            locked_until = session.locked_until_utc
            got = receive_all(receiver)
            peer_now = datetime.datetime.now(datetime.timezone.utc)
    return {
        "session_id": session.session_id,
        "bodies": [body(m) for m in got],
        "message_session_ids": sorted({m.session_id for m in got}),
        "sequence_numbers": [m.sequence_number for m in got],
        "lock_seconds_left": (locked_until - peer_now).total_seconds() if locked_until else None,
    }


def session_next_available():
    with client() as sb:
        send_sessions(sb, [("first", "f1"), ("second", "s1"), ("first", "f2")])
        ids = []
        for _ in range(2):
            with sb.get_queue_receiver(QUEUE, session_id=NEXT_AVAILABLE_SESSION, max_wait_time=5) as receiver:
                got = receive_all(receiver)
                ids.append((receiver.session.session_id, [body(m) for m in got]))
    return {"sessions": ids}


def session_settlement():
    """complete / abandon / defer / dead-letter / receive-deferred inside one session."""
    with client() as sb:
        send_sessions(sb, [("w", f"m{i}") for i in range(4)])
        with sb.get_queue_receiver(QUEUE, session_id="w") as receiver:
            peeked = [body(m) for m in receiver.peek_messages(max_message_count=10)]
            m0 = receive_one(receiver)
            receiver.abandon_message(m0)
            again = receive_one(receiver)
            receiver.complete_message(again)
            m1 = receive_one(receiver)
            receiver.defer_message(m1)
            m2 = receive_one(receiver)
            receiver.dead_letter_message(m2, reason="Bad", error_description="in a session")
            m3 = receive_one(receiver)
            receiver.complete_message(m3)
            nothing = receiver.receive_messages(max_message_count=1, max_wait_time=1)
            deferred = receiver.receive_deferred_messages([m1.sequence_number])
            receiver.complete_message(deferred[0])
        with sb.get_queue_receiver(QUEUE, sub_queue=ServiceBusSubQueue.DEAD_LETTER) as dlq:
            dead = receive_all(dlq)
    return {
        "peeked": peeked,
        "first": body(m0),
        "redelivered": body(again),
        "redelivered_count": again.delivery_count,
        "deferred": body(deferred[0]),
        "after_deferred": body(m2),
        "last": body(m3),
        "visible_while_deferred": len(nothing),
        "dead": [body(m) for m in dead],
        "dead_reason": dead[0].dead_letter_reason if dead else None,
        "dead_session_id": dead[0].session_id if dead else None,
    }


def session_state():
    with client() as sb:
        with sb.get_queue_receiver(QUEUE, session_id="stateful") as receiver:
            initial = receiver.session.get_state()
            receiver.session.set_state(b"step-1")
            read_back = receiver.session.get_state()
        # The lock is released on close; the state stays with the session.
        with sb.get_queue_receiver(QUEUE, session_id="stateful") as receiver:
            after_reopen = receiver.session.get_state()
            listed = list(sb.list_queue_sessions(QUEUE))
            receiver.session.set_state(None)
            cleared = receiver.session.get_state()
    return {
        "initial": initial,
        "read_back": read_back.decode() if read_back else None,
        "after_reopen": after_reopen.decode() if after_reopen else None,
        "listed": listed,
        "cleared": cleared,
    }


def session_list():
    with client() as sb:
        send_sessions(sb, [("l1", "x"), ("l2", "y"), ("l1", "z")])
        return {"sessions": sorted(sb.list_queue_sessions(QUEUE))}


def session_renew():
    with client() as sb:
        with sb.get_queue_receiver(QUEUE, session_id="renewed") as receiver:
            before = receiver.session.locked_until_utc
            time.sleep(1.5)
            after = receiver.session.renew_lock()
    return {"moved_seconds": (after - before).total_seconds()}


def session_locked_elsewhere():
    """A second receiver of a locked session is refused (retry_total=0: no retries)."""
    with client() as sb:
        send_sessions(sb, [("busy", "b")])
        with sb.get_queue_receiver(QUEUE, session_id="busy") as first:
            first.receive_messages(max_message_count=1, max_wait_time=WAIT)
            with ServiceBusClient.from_connection_string(CONN, retry_total=0) as other:
                start = time.monotonic()
                error = error_name(
                    lambda: other.get_queue_receiver(QUEUE, session_id="busy").receive_messages(max_wait_time=5)
                )
                elapsed = time.monotonic() - start
    return {"error": error, "seconds": elapsed}


def session_lock_expiry():
    """LockDuration is short (set by the Rust test): the lock lapses, another receiver takes the
    session and gets the message again; the first one's complete fails."""
    with client() as sb:
        send_sessions(sb, [("exp", "too-slow")])
        first = sb.get_queue_receiver(QUEUE, session_id="exp")
        with first:
            m = receive_one(first)
            lock_seconds = (first.session.locked_until_utc - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
            time.sleep(lock_seconds + 1)
            with sb.get_queue_receiver(QUEUE, session_id="exp") as second:
                again = receive_one(second)
                second.complete_message(again)
            error = None
            try:
                first.complete_message(m)
            except SessionLockLostError as e:
                error = type(e).__name__
    return {
        "error": error,
        "redelivered": body(again),
        "redelivered_count": again.delivery_count,
        "lock_seconds": lock_seconds,
    }


def session_none_available():
    """NEXT_AVAILABLE on an entity without messages: the broker refuses after the receiver's wait
    with com.microsoft:timeout, which the SDK raises as OperationTimeoutError (retry_total=1)."""
    with ServiceBusClient.from_connection_string(CONN, retry_total=1) as sb:
        start = time.monotonic()
        error = error_name(
            lambda: sb.get_queue_receiver(QUEUE, session_id=NEXT_AVAILABLE_SESSION, max_wait_time=2).receive_messages(
                max_wait_time=30
            )
        )
        elapsed = time.monotonic() - start
    return {"error": error, "seconds": elapsed}


def session_send_without_id():
    with ServiceBusClient.from_connection_string(CONN, retry_total=0) as sb:
        with sb.get_queue_sender(QUEUE) as sender:
            error = error_name(lambda: sender.send_messages(ServiceBusMessage("no-session")))
            sender.send_messages(ServiceBusMessage("fine", session_id="x"))
    return {"error": error}


def session_plain_receiver_refused():
    with ServiceBusClient.from_connection_string(CONN, retry_total=0) as sb:
        error = error_name(lambda: sb.get_queue_receiver(QUEUE).receive_messages(max_wait_time=2))
    return {"error": error}


def session_subscription():
    with client() as sb:
        with sb.get_topic_sender(TOPIC) as sender:
            sender.send_messages(
                [
                    ServiceBusMessage("t-a1", session_id="a"),
                    ServiceBusMessage("t-b1", session_id="b"),
                    ServiceBusMessage("t-a2", session_id="a"),
                    ServiceBusMessage("t-none"),
                ]
            )
        with sb.get_subscription_receiver(TOPIC, "sessions", session_id="a") as receiver:
            a = receive_all(receiver)
        with sb.get_subscription_receiver(TOPIC, "sessions", session_id=NEXT_AVAILABLE_SESSION, max_wait_time=5) as receiver:
            b = receive_all(receiver)
            b_id = receiver.session.session_id
        dead = drain(sb, "sessions", sub_queue=ServiceBusSubQueue.DEAD_LETTER)
        plain = drain(sb, "plain")
    return {
        "a": [body(m) for m in a],
        "b": [body(m) for m in b],
        "b_id": b_id,
        "dead": [body(m) for m in dead],
        "dead_reason": dead[0].dead_letter_reason if dead else None,
        "plain": [body(m) for m in plain],
    }


SCENARIOS = {
    f.__name__: f
    for f in [
        send_receive_complete,
        abandon,
        dead_letter,
        defer,
        peek,
        renew_lock,
        schedule,
        receive_and_delete,
        lock_lost,
        max_delivery,
        wrong_key,
        properties,
        throughput,
        topic_fan_out,
        topic_dead_letter,
        topic_schedule,
        topic_peek_defer,
        topic_forward,
        topic_errors,
        official_sample,
        session_specific,
        session_next_available,
        session_settlement,
        session_state,
        session_list,
        session_renew,
        session_locked_elsewhere,
        session_lock_expiry,
        session_none_available,
        session_send_without_id,
        session_plain_receiver_refused,
        session_subscription,
    ]
}


def main():
    if len(sys.argv) != 2 or sys.argv[1] not in SCENARIOS:
        sys.exit(f"usage: scenarios.py <{'|'.join(SCENARIOS)}>")
    result = SCENARIOS[sys.argv[1]]()
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    main()

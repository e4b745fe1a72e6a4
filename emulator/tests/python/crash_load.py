"""Load for the crash tests (emulator/tests/durability.rs) with the official Python SDK.

Usage:
  python crash_load.py load <log file> <round>   keep the emulator busy until it goes away
  python crash_load.py reconcile                 print what the queues and the session hold now

Environment: SB_CONN (connection string), SB_QUEUE (a plain queue), SB_SESSION_QUEUE (one that
requires sessions), SB_SECONDS (load: stop by then at the latest).

`load` runs four clients side by side: a sender (single messages and batches), a receiver that
completes, defers, dead-letters or keeps each message locked, a scheduler, and a session receiver
that keeps setting its session state. Each writes a line to the log only *after* the SDK call
returned, so the log holds exactly what the emulator acknowledged: the test kills the emulator
(kill -9) at a random moment, restarts it on the same data directory, and checks every logged
promise against what `reconcile` finds. The SDK's retries are off, so the first failed call after
the kill ends a client; the process then exits 0.

`reconcile` peeks the queue and its dead-letter queue (with each message's state and delivery
count), reads the session state, and schedules then cancels one message to learn the next
sequence number. It prints one JSON object.
"""

import datetime
import json
import os
import sys
import threading
import time

from azure.servicebus import ServiceBusClient, ServiceBusMessage, ServiceBusSubQueue

CONN = os.environ["SB_CONN"]
QUEUE = os.environ["SB_QUEUE"]
SESSION_QUEUE = os.environ["SB_SESSION_QUEUE"]
SESSION = "crash-session"
STOP = threading.Event()


def client(retries=0):
    return ServiceBusClient.from_connection_string(CONN, retry_total=retries)


class Log:
    """One JSON line per acknowledged operation, flushed as it is written (only the emulator is
    killed; this process ends normally)."""

    def __init__(self, path):
        self.file = open(path, "a", buffering=1)
        self.lock = threading.Lock()

    def write(self, **fields):
        with self.lock:
            self.file.write(json.dumps(fields) + "\n")


def until_stopped(work):
    def run(*args):
        try:
            work(*args)
        except Exception as e:  # the emulator went away: that is the point
            print(f"{work.__name__}: {type(e).__name__}: {e}", file=sys.stderr)
        finally:
            STOP.set()

    return run


@until_stopped
def sender(log, round_):
    n = 0
    with client() as sb, sb.get_queue_sender(QUEUE) as s:
        while not STOP.is_set():
            size = 1 if n % 3 else 5
            ids = [f"r{round_}-m{n + i}" for i in range(size)]
            batch = [ServiceBusMessage(i, message_id=i) for i in ids]
            s.send_messages(batch[0] if size == 1 else batch)
            for i in ids:
                log.write(op="sent", id=i)
            n += size


@until_stopped
def receiver(log):
    k = 0
    with client() as sb, sb.get_queue_receiver(QUEUE) as r:
        while not STOP.is_set():
            for m in r.receive_messages(max_message_count=20, max_wait_time=1):
                log.write(op="received", id=m.message_id, seq=m.sequence_number, count=m.delivery_count)
                k += 1
                if k % 11 == 0:
                    r.dead_letter_message(m, reason="crash-test", error_description="on purpose")
                    log.write(op="dead", id=m.message_id)
                elif k % 7 == 0:
                    r.defer_message(m)
                    log.write(op="deferred", id=m.message_id, seq=m.sequence_number)
                elif k % 13 == 0:
                    pass  # left locked: the crash ends the lock
                else:
                    # If the kill lands between these two lines, the complete may or may not
                    # have happened: the test allows either for a message logged as completing.
                    log.write(op="completing", id=m.message_id)
                    r.complete_message(m)
                    log.write(op="completed", id=m.message_id)


@until_stopped
def scheduler(log, round_):
    n = 0
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
    with client() as sb, sb.get_queue_sender(QUEUE) as s:
        while not STOP.is_set():
            i = f"r{round_}-s{n}"
            seqs = s.schedule_messages(ServiceBusMessage(i, message_id=i), later)
            log.write(op="scheduled", id=i, seq=seqs[0])
            n += 1
            time.sleep(0.02)


@until_stopped
def session_state(log):
    with client() as sb, sb.get_queue_receiver(SESSION_QUEUE, session_id=SESSION) as r:
        value = int(r.session.get_state() or b"0")
        while not STOP.is_set():
            value += 1
            r.session.set_state(str(value).encode())
            log.write(op="state", value=value)


def load(path, round_):
    log = Log(path)
    workers = [
        threading.Thread(target=sender, args=(log, round_)),
        threading.Thread(target=receiver, args=(log,)),
        threading.Thread(target=scheduler, args=(log, round_)),
        threading.Thread(target=session_state, args=(log,)),
    ]
    for w in workers:
        w.start()
    STOP.wait(float(os.environ.get("SB_SECONDS", "30")))
    STOP.set()
    for w in workers:
        w.join()
    print(json.dumps({"round": round_}))


def peek_all(receiver):
    out, seq = [], 0
    while True:
        got = receiver.peek_messages(max_message_count=250, sequence_number=seq)
        if not got:
            return out
        out += [
            {
                "id": m.message_id,
                "seq": m.sequence_number,
                "state": int(m.state),
                "count": m.delivery_count,
            }
            for m in got
        ]
        seq = got[-1].sequence_number + 1


def reconcile():
    # The emulator has just started: allow the SDK its retries here.
    with client(retries=3) as sb:
        with sb.get_queue_receiver(QUEUE) as r:
            main = peek_all(r)
        with sb.get_queue_receiver(QUEUE, sub_queue=ServiceBusSubQueue.DEAD_LETTER) as r:
            dead = peek_all(r)
        with sb.get_queue_receiver(SESSION_QUEUE, session_id=SESSION, max_wait_time=1) as r:
            state = r.session.get_state()
        with sb.get_queue_sender(QUEUE) as s:
            later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
            probe = s.schedule_messages(ServiceBusMessage("probe"), later)[0]
            s.cancel_scheduled_messages(probe)
    print(
        json.dumps(
            {
                "main": main,
                "dead": dead,
                "state": int(state) if state else 0,
                "next_seq": probe,
            }
        )
    )


if __name__ == "__main__":
    if sys.argv[1] == "load":
        load(sys.argv[2], int(sys.argv[3]))
    else:
        reconcile()
